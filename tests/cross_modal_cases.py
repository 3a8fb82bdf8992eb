"""Shared inputs, parameters and checks of the cross-modal block tests (every backend)."""
from __future__ import annotations

import torch
from torch import nn

from maven_fast.ops.cross_modal import (
    ABSORBED,
    KEY,
    KEY_LEN_1,
    PATHWAYS,
    CrossModalParams,
    cross_modal_block,
    cross_modal_reference,
)


def make_params(d=16, h=2, dtype=torch.float32, attn_dropout=0.0) -> CrossModalParams:
    attns = {p: nn.MultiheadAttention(d, h, dropout=attn_dropout, batch_first=True, dtype=dtype) for p in PATHWAYS}
    ln = nn.LayerNorm(d, dtype=dtype)
    with torch.no_grad():  # non-trivial biases and LayerNorm, so every gradient is exercised
        for m in attns.values():
            m.in_proj_bias.normal_(0, 0.5)
            m.out_proj.bias.normal_(0, 0.5)
        ln.weight.normal_(1, 0.3)
        ln.bias.normal_(0, 0.3)
    return CrossModalParams.from_modules(attns, ln)


def param_list(prm: CrossModalParams):
    return [*prm.in_proj_weight, *prm.in_proj_bias, *prm.out_proj_weight, *prm.out_proj_bias,
            prm.ln_weight, prm.ln_bias]


def with_params(prm: CrossModalParams, flat):
    return CrossModalParams(list(flat[0:6]), list(flat[6:12]), list(flat[12:18]), list(flat[18:24]),
                            flat[24], flat[25], prm.ln_eps, prm.num_heads, prm.attn_dropout_p)


def inputs(t, b=3, d=16, dtype=torch.float32, lengths=None):
    xs = [torch.randn(b, ti, d, dtype=dtype, requires_grad=True) for ti in t]
    if lengths is None:
        lengths = []
        for ti in t:
            l = torch.randint(0, ti + 1, (b,))
            l[0] = ti  # one full item
            if b > 1:
                l[1] = 0  # one fully masked item
            lengths.append(l)
    return xs, lengths


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def all_modes(t, shortcuts):
    if shortcuts == "absorb":  # weight absorption wherever it is allowed
        return [KEY_LEN_1 if t[KEY[p]] == 1 else ABSORBED for p in range(6)]
    return shortcuts


def check_against_reference(t, shortcuts, d=16, h=2, b=3, tol=2e-5, lengths=None, backend="cpu"):
    """Values and gradients of every input and parameter of ``backend`` vs the eager reference."""
    prm = make_params(d, h)
    xs, lens = inputs(t, b, d, lengths=lengths)
    ref = cross_modal_reference(*xs, *lens, prm)
    out = cross_modal_block(*xs, *lens, params=prm, backend=backend, shortcuts=all_modes(t, shortcuts))
    for o, r in zip(out, ref):
        assert o.shape == r.shape and o.dtype == r.dtype
        assert rel_err(o, r) < tol
    gs = [torch.randn_like(r) for r in ref]
    wrt = xs + param_list(prm)
    g_ref = torch.autograd.grad(ref, wrt, gs)
    g_out = torch.autograd.grad(out, wrt, gs)
    for i, (go, gr) in enumerate(zip(g_out, g_ref)):
        assert go.shape == gr.shape
        assert rel_err(go, gr) < tol, f"gradient {i}: rel. err {rel_err(go, gr):.2e}"


def op_args(t, modes, attn_p=0.0, out_p=0.0, dtype=torch.float32):
    prm = make_params(8, 2, dtype)
    xs, lens = inputs(t, b=2, d=8, dtype=dtype)
    rng = torch.tensor([3, 0], dtype=torch.long) if (attn_p or out_p) else None
    return (*xs, *lens, prm.in_proj_weight, prm.in_proj_bias, prm.out_proj_weight, prm.out_proj_bias,
            prm.ln_weight, prm.ln_bias, prm.ln_eps, 2, modes, attn_p, out_p, True, rng)


# --------------------------------------------------------------------------- SPEC 5 on the GPU
def values_and_grads(fn, xs, prm, upstream, dtype, device):
    """(outputs, gradients of every input and parameter) of ``fn(xs, prm)`` in ``dtype`` on
    ``device``, for the fixed upstream gradients ``upstream``."""
    leaf = lambda t: t.detach().to(device=device, dtype=dtype).requires_grad_()  # noqa: E731
    x = [leaf(v) for v in xs]
    p = with_params(prm, [leaf(v) for v in param_list(prm)])
    out = fn(x, p)
    grads = torch.autograd.grad(out, x + param_list(p), [g.to(device=device, dtype=dtype) for g in upstream])
    return [o.detach() for o in out], list(grads)


def assert_within_twice_eager(fused, eager, exact, dtype, floor, scale_min, what):
    """SPEC 5 on the GPU: err(fused vs fp64) <= 2 err(eager in the same dtype vs fp64)
    + floor * max(max|exact|, scale_min), tensor by tensor."""
    for i, (f, e, r) in enumerate(zip(fused, eager, exact)):
        assert f.shape == r.shape and f.dtype == dtype, (what, i, f.shape, f.dtype)
        assert torch.isfinite(f).all(), f"{what}[{i}]: non-finite values"
        r = r.double().cpu()
        scale = max(r.abs().max().item() if r.numel() else 0.0, scale_min)
        err_f = (f.double().cpu() - r).abs().max().item() if r.numel() else 0.0
        err_e = (e.double().cpu() - r).abs().max().item() if r.numel() else 0.0
        tol = 2 * err_e + floor * scale
        assert err_f <= tol, f"{what}[{i}]: error {err_f:.3g} vs fp64 exceeds {tol:.3g} (eager {err_e:.3g})"
