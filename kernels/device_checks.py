r"""Device-side argument checks for the Triton kernels.

GPU ops never read the device from the host (no sync, so they can be captured
in a CUDA graph), so values that only the kernels see (the key lengths) are
checked where the kernels read them. A failed check prints what is wrong and
stops the kernel with PTX ``trap``: the launch fails, CUDA reports the error
at the next synchronisation and the context cannot be used afterwards (as
with PyTorch's own device-side asserts). Under ``TRITON_INTERPRET=1`` the
tensors live on the host and the ops check them there instead.

    key_length(len, b, tk) = min(max(len[b], 0), tk)     (the length every kernel uses)
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

# The interpreter runs no PTX; the ops check host-resident lengths themselves.
GPU_TRAP: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")


@triton.jit
def trap_if(bad):
    """Stops the program (PTX ``trap``) where the int32 ``bad`` is non-zero."""
    if GPU_TRAP:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $1, 0; @p trap; mov.b32 $0, 0; }",
            "=r,r", [bad], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def key_length(len_ptr, b, tk, CHECK: tl.constexpr):
    """len[b] clamped to [0, tk] (int32). With CHECK (the forward kernels, which read
    every length), a length outside [0, tk] is a device-side error."""
    n = tl.load(len_ptr + b)
    if CHECK:
        bad = (n < 0) | (n > tk)
        if bad:
            tl.device_print("maven_fast cross_modal_block: a key length is outside [0, T]; item b, length, T:",
                            b, n, tk)
            trap_if(bad.to(tl.int32))
    return tl.minimum(tl.maximum(n, 0), tk).to(tl.int32)


@triton.jit
def check_item_lengths(lengths, valid):
    """Key-length-1 pathways: every valid entry of ``lengths`` must be 0 or 1
    (device-side error otherwise)."""
    bad = tl.max((valid & ((lengths < 0) | (lengths > 1))).to(tl.int32), axis=0)
    if bad != 0:
        tl.device_print("maven_fast cross_modal_block: a key length of a key-length-1 pathway is not 0 or 1")
        trap_if(bad)
