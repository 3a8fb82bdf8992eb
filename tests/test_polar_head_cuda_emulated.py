"""The CUDA kernels of the polar head, run on the CPU by the emulator
(tests/cuda_emulation) behind the CUDA op's own host code, against the CPU
op: valence/arousal, theta/intensity, the masked MSE and its valid count, and
the gradients of x, W and b; fp32 and bf16, the vectorised and the scalar
load path, several CTAs (the last CTA's ordered reduction of the loss and of
dW, db).
"""
from __future__ import annotations

import pytest
import torch

from polar_head_cases import make_inputs


def _both(emu, n, d, dtype, bounded, with_loss, mask_kind="random"):
    x, w, b, target, mask, (g_va, g_ti, g_loss) = make_inputs(n, d, dtype, with_loss=with_loss,
                                                            mask_kind=mask_kind, seed=n + d)
    ref = torch.ops.maven_fast.polar_head(x, w, b, target, mask, bounded)
    out = emu.polar_head_forward(x, w, b, target, mask, bounded)
    gl = g_loss if with_loss else None
    g_ref = torch.ops.maven_fast.polar_head_backward(g_va.to(dtype), g_ti.to(dtype), gl, x, w, b, target, mask,
                                                     ref[3], bounded)
    g_out = emu.polar_head_backward(g_va.to(dtype), g_ti.to(dtype), gl, x, w, b, target, mask, out[3], bounded)
    return ref, out, g_ref, g_out


def _close(a, r, tol, what):
    a, r = a.double(), r.double()
    scale = max(r.abs().max().item(), 1e-3) if r.numel() else 1.0
    assert (a - r).abs().max().item() <= tol * scale if r.numel() else True, what


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.bfloat16, 1e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("d", [32, 24])  # 16-byte vector loads; scalar loads (d not a multiple of the vector)
@pytest.mark.parametrize("bounded", [True, False])
def test_emulated_polar_head_matches_cpu(cuda_emulator, dtype, tol, d, bounded):
    # 37 rows: 5 forward CTAs (8 warps each) and 8 backward CTAs (grid capped at 4 per SM x 2 SMs).
    ref, out, g_ref, g_out = _both(cuda_emulator, 37, d, dtype, bounded, with_loss=True)
    for i, (a, r) in enumerate(zip(out, ref)):
        _close(a, r, tol, f"output {i}")
    assert out[3].item() == ref[3].item()  # the valid-row count is exact
    for i, (a, r) in enumerate(zip(g_out, g_ref)):
        _close(a, r, tol, f"gradient {i}")


def test_emulated_polar_head_without_loss_or_valid_rows(cuda_emulator):
    ref, out, g_ref, g_out = _both(cuda_emulator, 9, 32, torch.float32, True, with_loss=False)
    assert out[2].item() == 0.0 and out[3].item() == 0.0
    for a, r in zip(list(out[:2]) + list(g_out), list(ref[:2]) + list(g_ref)):
        _close(a, r, 2e-6, "value")
    ref, out, _, _ = _both(cuda_emulator, 9, 32, torch.float32, True, with_loss=True, mask_kind="none_valid")
    assert out[2].item() == 0.0 and out[3].item() == 0.0
