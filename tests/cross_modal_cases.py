"""Shared inputs, parameters and checks of the cross-modal block tests (every backend)."""
from __future__ import annotations

import torch
from torch import nn

from maven_fast.ops.cross_modal import (
    ABSORBED,
    GENERAL,
    KEY,
    KEY_LEN_1,
    PATHWAYS,
    CrossModalParams,
    SlotPlan,
    cross_modal_block,
    cross_modal_reference,
    saved_names,
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


# Key tiles of the kernels: CPU attention blocks of 128 keys, Triton's BLOCK_N
# (16 under the interpreter, 16 to 64 on a GPU) and the CUDA kernels' 32-key tiles.
def partial_length(t: int) -> int:
    """A length that leaves item keys padded INSIDE a key tile of every kernel: the
    longest l < t that is not a multiple of 16 (so of no tile size), e.g. 255 of
    257 (the last 128-key tile holds 127 valid keys and one padded key), 36 of 37;
    1 of 2; 0 of 1 (a key-length-1 modality: the item is fully masked)."""
    for length in range(t - 1, 0, -1):
        if length % 16:
            return length
    return 0


def inputs(t, b=3, d=16, dtype=torch.float32, lengths=None):
    """Random inputs [b, t_m, d] and lengths: item 0 full, item 1 partly padded with
    its last valid key inside a key tile (:func:`partial_length`; with several key
    tiles, padding inside a later one), item 2 fully masked, the rest random."""
    xs = [torch.randn(b, ti, d, dtype=dtype, requires_grad=True) for ti in t]
    if lengths is None:
        lengths = []
        for ti in t:
            l = torch.randint(0, ti + 1, (b,))
            l[0] = ti  # one full item
            if b > 1:
                l[1] = partial_length(ti)  # padded keys inside a (later) key tile
            if b > 2:
                l[2] = 0  # one fully masked item
            lengths.append(l)
    return xs, lengths


def padding_masks(t, lens, device="cpu"):
    """Per modality, [b, t_m] True where the step is padding (index >= length)."""
    return [torch.arange(ti, device=device)[None, :] >= l.to(device)[:, None] for ti, l in zip(t, lens)]


def nan_padded(xs, pads):
    """Copies of ``xs`` with NaN at every padded step: a kernel that reads a padded
    key or value, even one multiplied by a probability of 0, turns a valid output NaN."""
    return [torch.where(m[..., None], torch.full_like(x, float("nan")), x) for x, m in zip(xs, pads)]


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def all_modes(t, shortcuts):
    if shortcuts == "absorb":  # weight absorption wherever it is allowed
        return [KEY_LEN_1 if t[KEY[p]] == 1 else ABSORBED for p in range(6)]
    return shortcuts


def check_against_reference(t, shortcuts, d=16, h=2, b=3, tol=2e-5, lengths=None, backend="cpu", device="cpu"):
    """Values and gradients of every input and parameter of ``backend`` vs the eager reference
    (both on ``device``)."""
    prm = make_params(d, h)
    xs, lens = inputs(t, b, d, lengths=lengths)
    if device != "cpu":
        xs = [x.detach().to(device).requires_grad_() for x in xs]
        lens = [length.to(device) for length in lens]
        prm = with_params(prm, [p.detach().to(device).requires_grad_() for p in param_list(prm)])
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


def op_args(t, modes, attn_p=0.0, out_p=0.0, dtype=torch.float32, device="cpu"):
    """The op's arguments; tensors on ``device`` (the rng stays on the CPU, as cross_modal_block passes it)."""
    prm = make_params(8, 2, dtype)
    xs, lens = inputs(t, b=2, d=8, dtype=dtype)
    rng = torch.tensor([3, 0], dtype=torch.long) if (attn_p or out_p) else None
    on = (lambda v: v) if device == "cpu" else (lambda v: v.detach().to(device))  # noqa: E731
    ons = lambda vs: [on(v) for v in vs]  # noqa: E731
    return (*ons(xs), *ons(lens), ons(prm.in_proj_weight), ons(prm.in_proj_bias), ons(prm.out_proj_weight),
            ons(prm.out_proj_bias), on(prm.ln_weight), on(prm.ln_bias), prm.ln_eps, 2, modes, attn_p, out_p, True, rng)


# --------------------------------------------------------------------------- SPEC 5 on the GPU
# Floors of the SPEC 5 rule per dtype, relative to max(max|exact|, 1): fp32 ~1e-5
# (SPEC 5; a silent switch to TF32 dots, ~1e-3, fails it), fp16 and bf16 about one
# rounding of an output (the CUDA tests allow bf16 a second one, tests/test_cross_modal_cuda.py).
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-3}


def check_within_twice_eager(xs, lens, prm, modes, dtype, backend, device="cpu", floor=None):
    """SPEC 5: the fused error (values and the gradients of every input and parameter)
    is <= 2x eager PyTorch's in the same dtype, both against a float64 reference, plus
    ``floor`` (default :data:`FLOOR`) x max(1, max|ref|)."""
    lens = [length.to(device) for length in lens]
    upstream = [0.1 + torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x) for x in xs]

    def ref(x, p):
        return cross_modal_reference(*x, *lens, p)

    def fused(x, p):
        return cross_modal_block(*x, *lens, params=p, backend=backend, shortcuts=modes)

    exact = values_and_grads(ref, xs, prm, upstream, torch.float64, device)
    eager = values_and_grads(ref, xs, prm, upstream, dtype, device)
    out = values_and_grads(fused, xs, prm, upstream, dtype, device)
    floor = FLOOR[dtype] if floor is None else floor
    for kind, what in enumerate(("values", "grads")):
        assert_within_twice_eager(out[kind], eager[kind], exact[kind], dtype, floor, 1.0, what)


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


def check_bitwise_deterministic(backend, t, shortcuts, b, d=64, h=2, dtype=torch.float32, device="cuda", runs=3):
    """Run-to-run determinism: ``runs`` calls (dropout on, fixed rng) give bitwise equal
    values and gradients of every input and parameter. Use a batch large enough that
    the reductions across programs (the Triton combine backward's ticket over 3 B
    programs; the CUDA dK accumulation) see far more programs than SMs."""
    prm = make_params(d, h, attn_dropout=0.1)
    xs, lens = inputs(t, b, d)
    lens = [length.to(device) for length in lens]
    modes = all_modes(t, shortcuts)
    upstream = [torch.randn(b, ti, d, dtype=torch.float64) for ti in t]

    def fn(x, p):
        return cross_modal_block(*x, *lens, params=p, backend=backend, shortcuts=modes, dropout_p=0.1,
                                 training=True, rng=torch.tensor([20240607, 11]))

    first = values_and_grads(fn, xs, prm, upstream, dtype, device)
    for _ in range(runs - 1):
        again = values_and_grads(fn, xs, prm, upstream, dtype, device)
        for i, (a, c) in enumerate(zip(first[0] + first[1], again[0] + again[1])):
            assert torch.equal(a, c), f"{backend} {dtype}: tensor {i} differs between runs"


# --------------------------------------------------------------------------- padding: never read
def padding_op_args(t, modes, b=3, d=16, h=2, dtype=torch.float32, device="cpu", attn_p=0.0, out_p=0.0,
                    lengths=None):
    """(op arguments, padding masks) for the ops' own calling convention (tensors detached)."""
    prm = make_params(d, h, dtype)
    xs, lens = inputs(t, b, d, dtype=dtype, lengths=lengths)
    on = lambda ts: [v.detach().to(device) for v in ts]  # noqa: E731
    training = bool(attn_p or out_p)
    rng = torch.tensor([2024, 3], dtype=torch.long) if training else None
    args = (*on(xs), *on(lens), on(prm.in_proj_weight), on(prm.in_proj_bias), on(prm.out_proj_weight),
            on(prm.out_proj_bias), prm.ln_weight.detach().to(device), prm.ln_bias.detach().to(device), prm.ln_eps,
            h, list(modes), attn_p, out_p, training, rng)
    return args, padding_masks(t, lens, device)


def check_padding_never_read(forward, backward, t, modes, **kw):
    """Padded steps (index >= length) are never read, and get exactly zero gradient.

    ``forward(*args)`` / ``backward(*grads, *args[:-1], saved)``: an op pair with the
    C++ op's calling convention (CPU, CUDA, Triton op, or the CUDA emulator).

    1. NaN at the padded steps of all three modalities leaves every valid output
       row bitwise unchanged (so finite). Any read of a padded key or value shows,
       even one weighted by a probability of 0 (0 * NaN = NaN). (Each backend's
       ``test_padded_keys_are_never_read`` checks that NaN padded audio leaves
       the video and text outputs bitwise unchanged, padded rows included.)
    2. With upstream gradients zero on padded rows, every padded step of every
       input gets exactly zero gradient (no dK, dV written for masked keys).
    3. The backward given NaN at every padded key and value (the K and V slots of
       the saved projections of general pathways; x itself, which absorbed
       pathways read as keys) gives bitwise the same input gradients and the same
       gradients of every parameter that does not multiply x (in_proj weights
       multiply x, NaN rows included, so they are left out when x is NaN).
    """
    args, pads = padding_op_args(t, modes, **kw)
    xs, rest = list(args[:3]), args[3:]
    with torch.no_grad():
        clean = forward(*args)
        poisoned = forward(*nan_padded(xs, pads), *rest)
        for m in range(3):
            valid = ~pads[m]
            assert torch.isfinite(poisoned[m][valid]).all(), f"output {m}: NaN from a padded step"
            assert torch.equal(poisoned[m][valid], clean[m][valid]), f"output {m}: valid rows changed"

        # 2. upstream gradients on valid rows only
        gs = [torch.randn_like(o) * (~pm)[..., None] for o, pm in zip(clean[:3], pads)]
        g_clean = backward(*gs, *args[:-1], list(clean[3]))
        for m in range(3):
            assert torch.isfinite(g_clean[m]).all()
            padded = g_clean[m][pads[m]]
            assert (padded == 0).all(), f"input {m}: padded steps got gradient (max {padded.abs().max():.3g})"

        # 3. NaN keys and values for the backward
        modes = args[14]
        names = saved_names(modes, bool(args[17] and args[15]), bool(args[17] and args[16]))
        saved = [s.clone() for s in clean[3]]
        slots = SlotPlan.from_modes(modes)
        d = xs[0].shape[-1]
        for p in range(6):
            if modes[p] != GENERAL:
                continue
            y = KEY[p]
            y_saved = saved[names.index(f"Y_{'vat'[y]}")]
            rows = pads[y].reshape(-1)
            for slot in (slots.k_slot[p], slots.v_slot[p]):
                y_saved[rows, slot * d:(slot + 1) * d] = float("nan")
        absorbed = ABSORBED in modes
        x_bwd = nan_padded(xs, pads) if absorbed else xs
        g_nan = backward(*gs, *x_bwd, *args[3:-1], saved)
        for i, (a, c) in enumerate(zip(g_nan, g_clean)):
            if absorbed and 3 <= i < 9:
                continue  # d in_proj_weight = dY^T x: NaN rows of x times zero rows of dY
            assert torch.isfinite(a).all(), f"gradient {i}: NaN from a padded key or value"
            assert torch.equal(a, c), f"gradient {i} changed when padded keys and values became NaN"
