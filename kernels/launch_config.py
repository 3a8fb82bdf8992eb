"""Launch options of every Triton kernel of maven_fast: one register rule.

Every launch config sets ``maxnreg`` (PTX ``.maxnreg``) to the most registers a
thread of the block can have. Without it, ptxas (that of Triton 3.8) often chose
a lower count itself, for occupancy, and spilled: 4 to 64 bytes in 35 of the 456
compiles of the ahead-of-time matrix (attention, combine and polar-head kernels,
e.g. 96 registers and 16 bytes of spills where 154 registers need none); with it,
those 35 spill nothing and ptxas spills only where a kernel needs more than the
limit. The ahead-of-time check (maven_fast/triton_aot.py) compiles with these configs.
(torch.compile's Inductor re-emits user kernels' configs without ``maxnreg``;
eager calls and Triton's own autotuner keep it.)
"""
from __future__ import annotations

import triton

REGISTERS_PER_THREAD = 255  # the most a thread can address (sm_80, sm_90)
REGISTERS_PER_BLOCK = 65536  # the register file one block may use (sm_80, sm_90)


def max_registers(num_warps: int) -> int:
    """The most registers per thread a block of ``num_warps`` warps can have."""
    return min(REGISTERS_PER_THREAD, REGISTERS_PER_BLOCK // (32 * num_warps))


def launch_config(kwargs: dict, num_warps: int = 4, num_stages: int = 3) -> triton.Config:
    """A config (constexprs ``kwargs``, warps, pipeline stages) with the register limit."""
    return triton.Config(kwargs, num_warps=num_warps, num_stages=num_stages, maxnreg=max_registers(num_warps))
