"""The warp-level tensor-core primitives the CUDA kernels use, and their CPU
emulation (tests/cuda_emulation/include/emu_warp.h):

- the fragment layouts of csrc/common/mma_layout.h (used by the kernels and by
  the emulator) equal CuTe's ``MMA_Traits`` for ``SM80_16x8x16_F32BF16BF16F32_TN``
  and the f16 variant, every lane and value of A, B and C (an independent source:
  the nvidia-cutlass package's headers, compiled on the host);
- one emulated ``mma.sync.m16n8k16`` equals torch's ``A @ B + C``, with the
  fragments gathered by the layout, by ``ldmatrix`` x4/x2/x1 and x2/x1 ``.trans``;
- emulated ``cp.async`` lands only when its group is waited for, and zero-fills
  without reading when the source size is 0;
- breaking a warp-synchronous rule (a lane missing from an mma.sync, a partial
  shuffle mask, an ldmatrix row outside shared memory) fails the launch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
CSRC = HERE.parent / "csrc"


def _cuda_include() -> Path | None:
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "cuda_runtime_api.h").exists():
            return Path(root) / "include"
    nvcc = shutil.which("nvcc")
    return Path(nvcc).resolve().parents[1] / "include" if nvcc else None


def test_mma_layouts_equal_cutes_mma_traits(tmp_path):
    cutlass = pytest.importorskip("cutlass_library", reason="needs the nvidia-cutlass package (CuTe headers)")
    cute = Path(cutlass.__file__).parent / "source" / "include"
    cuda = _cuda_include()
    if cuda is None or shutil.which("g++") is None:
        pytest.skip("needs g++ and the CUDA toolkit's headers (CuTe includes them)")
    exe = tmp_path / "cute_layout_check"
    subprocess.run(["g++", "-std=c++17", "-O0", f"-I{cute}", f"-I{cuda}", f"-I{cuda / 'cccl'}", f"-I{CSRC}",
                    str(HERE / "cuda_emulation" / "cute_layout_check.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().splitlines()[-1] == "checked 1024 values, 0 mismatches"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mode", [0, 1, 2, 3], ids=["layout", "ldmatrix-x4-x2", "ldmatrix-x2-trans", "ldmatrix-x1"])
def test_emulated_mma_equals_torch(cuda_emulator, dtype, mode):
    a, b = torch.randn(16, 16).to(dtype), torch.randn(16, 8).to(dtype)
    c = torch.randn(16, 8)
    d = cuda_emulator.mma_tile(a, b, c, mode)
    ref = a.double() @ b.double() + c.double()
    torch.testing.assert_close(d.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def test_emulated_cp_async_lands_at_its_wait_and_zero_fills(cuda_emulator):
    src = torch.randint(-30000, 30000, (48, 8), dtype=torch.int16)
    after1, after0 = cuda_emulator.cp_async(src, 32, 40)  # groups: rows < 32, rows >= 32; rows >= 40 zero-filled
    full = src.clone()
    full[40:] = 0
    assert torch.equal(after1[:32], full[:32])
    assert (after1[32:] == -1).all()  # the second group has not landed: still the launch's NaN-fill (0xFFFF)
    assert torch.equal(after0, full)


@pytest.mark.parametrize("what", [0, 1, 2], ids=["lane-missing-from-mma", "partial-shuffle-mask",
                                                 "ldmatrix-outside-shared"])
def test_breaking_a_warp_rule_fails_the_launch(cuda_emulator, what):
    with pytest.raises(RuntimeError, match="emu: broken_kernel failed"):
        cuda_emulator.broken(what)
