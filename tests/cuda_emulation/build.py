"""Builds the CPU emulation of maven_fast's CUDA kernels (cross-modal block and
polar head; see include/emu_cuda.h) behind the same host code as the real ops.

The .cu sources are compiled as C++ after two mechanical rewrites: a launch
``kernel<<<grid, block, smem, stream>>>(args)`` becomes
``emu_launch(kernel, grid, block, smem, stream, args)`` and
``extern __shared__ T name[]`` a pointer to the emulator's buffer.
"""
from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCES = ("cross_modal/cross_modal_attention_dispatch.cu", "cross_modal/cross_modal_attention_kernel.cu",
           "cross_modal/cross_modal_attention_tc_kernel.cu", "cross_modal/cross_modal_combine_kernel.cu",
           "polar_head/polar_head_kernel.cu")
# Test kernels of the warp-level primitives (mma.sync, ldmatrix, cp.async), in this folder.
TEST_SOURCES = ("primitives_test_kernels.cu",)


def _convert(src: str) -> str:
    src = re.sub(r"([\w:]+(?:<[^;{}()]*?>)?)\s*<<<(.*?)>>>\s*\((.*?)\);", r"emu_launch(\1, \2, \3);", src, flags=re.S)
    src = re.sub(r"extern __shared__ ([\w ]+?) (\w+)\[\];", r"\1* \2 = emu_dyn_smem<\1>();", src)
    if "<<<" in src or "extern __shared__" in src:
        raise RuntimeError("cuda_emulation: a launch or dynamic shared memory declaration was not rewritten")
    return '#include "emu_cuda.h"\n' + src


def load(verbose: bool = False):
    """The compiled emulation module (cached under build/cuda_emulation/torch-<version>)."""
    import torch
    from torch.utils.cpp_extension import load as cpp_load

    # One build per torch release: the module links against it, and torch < 2.14
    # takes the lock file that newer releases leave behind for a held lock.
    out = ROOT / "build" / "cuda_emulation" / f"torch-{torch.__version__.split('+')[0]}"
    gen = out / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    srcs = []
    for name in SOURCES + TEST_SOURCES:
        text = _convert((ROOT / "csrc" / name if name in SOURCES else HERE / name).read_text())
        dst = gen / Path(name).name.replace(".cu", "_emu.cpp")
        if not dst.exists() or dst.read_text() != text:  # keep mtimes for ninja when unchanged
            dst.write_text(text)
        srcs.append(str(dst))
    # The real ops' host code, and what it calls on every device (common/gemm_call.cpp: aten_gemm).
    srcs += [str(ROOT / "csrc" / "cross_modal" / "cross_modal.cpp"), str(ROOT / "csrc" / "polar_head" / "polar_head.cpp"),
             str(ROOT / "csrc" / "common" / "gemm_call.cpp"), str(HERE / "emu_ext.cpp")]
    return cpp_load(
        "maven_fast_cuda_emulation", srcs,
        extra_include_paths=[str(HERE / "include"), str(ROOT / "csrc")],
        extra_cflags=["-O2", "-std=c++20", "-Wno-unknown-pragmas"],
        build_directory=str(out), verbose=verbose,
    )
