"""Shared inputs and tolerance rules for the polar head tests (CPU and GPU)."""
from __future__ import annotations

import torch

from maven_fast.ops import polar_head_reference

SIZES = (1, 7, 1000, 4097)


def make_inputs(n, d=256, dtype=torch.float32, device="cpu", with_loss=True, mask_kind="random", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(2, d, generator=g) / d**0.5
    b = torch.randn(2, generator=g) * 0.5
    target = (torch.rand(n, 2, generator=g) * 2 - 1) if with_loss else None
    if not with_loss:
        mask = None
    elif mask_kind == "random":
        mask = torch.rand(n, generator=g) > 0.3
    elif mask_kind == "none_valid":
        mask = torch.zeros(n, dtype=torch.bool)
    elif mask_kind == "all_valid":
        mask = None
    else:
        raise ValueError(mask_kind)
    upstream = (torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g), torch.tensor(1.7))

    def to(t, dt=dtype):
        return None if t is None else t.to(device=device, dtype=dt if t.is_floating_point() else t.dtype)

    return (to(x), to(w), to(b), to(target, torch.float32), None if mask is None else mask.to(device),
            tuple(to(u, torch.float32) for u in upstream))


def run(fn, x, w, b, target, mask, upstream, bounded):
    """Values and gradients of x, w, b for a fixed upstream gradient."""
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    out = fn(x, w, b, target, mask, bounded)
    g_va, g_ti, g_loss = upstream
    total = (out.valence_arousal.float() * g_va).sum() + (out.theta_intensity.float() * g_ti).sum()
    if out.loss is not None:
        total = total + out.loss * g_loss
    grads = torch.autograd.grad(total, (x, w, b))
    values = [out.valence_arousal, out.theta_intensity] + ([out.loss, out.n_valid] if out.loss is not None else [])
    return [v.detach() for v in values], list(grads)


def reference(x, w, b, target, mask, bounded):
    return polar_head_reference(x, w, b, target, mask, bounded)


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_matches(fused, eager_same_dtype, exact64, dtype, what):
    """SPEC 5: fp32 within ~1e-5 relative of the fp64 reference; reduced precision:
    error vs fp64 at most 2x that of eager PyTorch in the same dtype (+ a floor)."""
    for i, (f, e, r) in enumerate(zip(fused, eager_same_dtype, exact64)):
        scale = max(r.double().abs().max().item(), 1e-3)
        err = max_err(f, r)
        if dtype in (torch.float32, torch.float64):
            tol = (1e-5 if dtype == torch.float32 else 1e-10) * scale
            # Reductions over many rows (grad W) accumulate rounding like eager does.
            tol = max(tol, 2 * max_err(e, r))
        else:
            tol = 2 * max_err(e, r) + 1e-3 * scale
        assert err <= tol, f"{what}[{i}]: error {err:.3g} vs fp64 exceeds {tol:.3g}"
