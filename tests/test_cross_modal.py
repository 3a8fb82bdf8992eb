"""The fused cross-modal block (CPU backend) against the eager reference."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maven_fast import BackendUnavailable
from maven_fast.backends import backend_problems
from maven_fast.nn import CrossModalBlock
from maven_fast.ops.cross_modal import (
    ABSORBED,
    GENERAL,
    KEY,
    KEY_LEN_1,
    PATHWAYS,
    QUERY,
    CrossModalParams,
    cross_modal_block,
    cross_modal_reference,
    plan_pathways,
    saved_names,
)
from maven_fast.ops.frame_concat_linear import frame_concat_linear
from cross_modal_cases import (FLOOR, all_modes, assert_within_twice_eager, check_against_reference,
                               check_padding_never_read, check_within_twice_eager, inputs, make_params, op_args,
                               param_list, rel_err, values_and_grads, with_params)


# --------------------------------------------------------------------------- values and gradients
@pytest.mark.parametrize("t", [(17, 3, 1), (1, 17, 3), (3, 1, 64), (100, 17, 1), (257, 3, 1), (1, 1, 1), (5, 7, 9)])
@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_matches_reference(t, shortcuts):
    check_against_reference(t, shortcuts)


@pytest.mark.parametrize("d,h", [(128, 2), (256, 2), (512, 2), (64, 4), (24, 3)])
@pytest.mark.parametrize("shortcuts", [False, "absorb"])
def test_head_sizes(d, h, shortcuts):
    # head sizes 64, 128, 256 (the presets), 16 and an odd 8 x 3
    check_against_reference((9, 6, 1), shortcuts, d=d, h=h, b=2, tol=5e-5)


def test_long_keys_cross_several_key_blocks():
    check_against_reference((3, 257, 130), False, b=2)
    check_against_reference((70, 257, 130), "absorb", b=2)


@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_length_edges(shortcuts):
    # Every length at its edges: 0, 1, T-1, T in every modality.
    t = (5, 4, 3)
    b = 4
    lens = [torch.tensor([0, 1, ti - 1, ti]) for ti in t]
    check_against_reference(t, shortcuts, b=b, lengths=lens)


@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_padded_keys_are_never_read(shortcuts):
    t = (6, 5, 4)
    prm = make_params()
    xs, lens = inputs(t)
    xs = [x.detach() for x in xs]
    out = cross_modal_block(*xs, *lens, params=prm, backend="cpu", shortcuts=all_modes(t, shortcuts))
    # Change audio at its padded positions: video and text outputs must not move at all.
    mask = torch.arange(t[1])[None, :] >= lens[1][:, None]
    x_a2 = torch.where(mask[..., None], torch.full_like(xs[1], float("nan")), xs[1])
    out2 = cross_modal_block(xs[0], x_a2, xs[2], *lens, params=prm, backend="cpu", shortcuts=all_modes(t, shortcuts))
    assert torch.equal(out[0], out2[0]) and torch.equal(out[2], out2[2])


# Items end inside a key block (cross_modal_cases.partial_length): 4 of 5, 255 of
# 257 (the CPU's second 128-key block holds 127 valid keys), 129 of 130.
@pytest.mark.parametrize("t,shortcuts", [
    ((6, 5, 4), False), ((6, 5, 4), "absorb"), ((9, 1, 1), True),
    ((3, 257, 130), False), ((70, 257, 130), "absorb"),
])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_padded_steps_are_never_read_and_get_zero_gradient(t, shortcuts, p):
    modes = all_modes(t, shortcuts)
    if isinstance(modes, bool):
        modes = plan_pathways(*t, 16, 2, shortcuts=modes)
    check_padding_never_read(torch.ops.maven_fast.cross_modal_block, torch.ops.maven_fast.cross_modal_block_backward,
                             t, modes, attn_p=p, out_p=p)


def test_fully_masked_pathway_gives_out_proj_bias():
    t = (4, 3, 2)
    prm = make_params()
    xs, _ = inputs(t, b=1)
    lens = [torch.tensor([4]), torch.tensor([0]), torch.tensor([0])]
    for sc in (False, True, "absorb"):
        out = cross_modal_block(*xs, *lens, params=prm, backend="cpu", shortcuts=all_modes(t, sc))
        s = (xs[0] + prm.out_proj_bias[0] + prm.out_proj_bias[1]) / 3
        expect = nn.functional.layer_norm(s, (16,), prm.ln_weight, prm.ln_bias, prm.ln_eps)
        assert rel_err(out[0], expect) < 1e-5
        assert torch.isfinite(torch.cat([o.flatten() for o in out])).all()


@pytest.mark.parametrize("t", [(9, 1, 1), (7, 12, 1), (4, 20, 6)])
def test_shortcuts_equal_general_path(t):
    prm = make_params()
    xs, lens = inputs(t)
    general = cross_modal_block(*xs, *lens, params=prm, backend="cpu", shortcuts=False)
    wrt = xs + param_list(prm)
    gs = [torch.randn_like(o) for o in general]
    g_general = torch.autograd.grad(general, wrt, gs)
    for modes in (plan_pathways(*t, 16, 2), all_modes(t, "absorb")):
        out = cross_modal_block(*xs, *lens, params=prm, backend="cpu", shortcuts=modes)
        for o, r in zip(out, general):
            assert rel_err(o, r) < 2e-5
        for go, gr in zip(torch.autograd.grad(out, wrt, gs), g_general):
            assert rel_err(go, gr) < 2e-5


def test_plan_pathways():
    # reference_mlp: pooled audio/text -> key length 1 wherever they are keys, absorption for a2v/t2v.
    assert plan_pathways(64, 1, 1, 512, 2) == [KEY_LEN_1, KEY_LEN_1, ABSORBED, KEY_LEN_1, ABSORBED, KEY_LEN_1]
    assert plan_pathways(64, 1, 1, 512, 2, shortcuts=False) == [GENERAL] * 6
    # Long queries over short keys: never absorbed.
    assert plan_pathways(400, 400, 400, 512, 2) == [GENERAL] * 6


def test_plan_pathways_follows_the_gpu_kernels():
    # One head, 40 video queries over 300 audio keys (v2a): on the SIMT kernels
    # (fp32 CUDA, Triton as tuned) attention FLOPs cost ~16 GEMM FLOPs and
    # absorption pays; the CUDA backend's tensor-core kernels make the general
    # path's attention cheap (w = 2) while absorbed pathways stay on SIMT.
    simt = plan_pathways(40, 300, 1, 512, 1, device_type="cuda", backend="cuda", dtype=torch.float32)
    tc = plan_pathways(40, 300, 1, 512, 1, device_type="cuda", backend="cuda", dtype=torch.bfloat16)
    assert simt[0] == ABSORBED and tc[0] == GENERAL
    assert plan_pathways(40, 300, 1, 512, 1, device_type="cuda", backend="triton", dtype=torch.bfloat16) == simt
    # Very short queries against long keys still absorb on tensor cores.
    assert plan_pathways(2, 300, 1, 512, 1, device_type="cuda", backend="cuda", dtype=torch.float16)[0] == ABSORBED


def test_non_contiguous_inputs():
    t = (5, 4, 3)
    prm = make_params()
    xs, lens = inputs(t)
    nc = [x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for x in xs]
    assert not nc[0].is_contiguous()
    ref = cross_modal_reference(*xs, *lens, prm)
    out = cross_modal_block(*nc, *lens, params=prm, backend="cpu")
    for o, r in zip(out, ref):
        assert rel_err(o, r) < 2e-5
    g = torch.autograd.grad(out, nc, [torch.ones_like(o) for o in out])
    g_ref = torch.autograd.grad(ref, xs, [torch.ones_like(o) for o in out])
    for a, b in zip(g, g_ref):
        assert rel_err(a, b) < 2e-5
    # int32 lengths work as well
    out32 = cross_modal_block(*xs, *[l.int() for l in lens], params=prm, backend="cpu")
    assert all(torch.equal(a, b) for a, b in zip(out32, cross_modal_block(*xs, *lens, params=prm, backend="cpu")))


def test_default_lengths_mean_all_valid():
    prm = make_params()
    xs, _ = inputs((4, 3, 2))
    full = [torch.full((3,), x.shape[1]) for x in xs]
    a = cross_modal_block(*xs, params=prm, backend="cpu")
    b = cross_modal_block(*xs, *full, params=prm, backend="cpu")
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_results_do_not_depend_on_thread_count():
    prm = make_params()
    xs, lens = inputs((70, 33, 5))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = cross_modal_block(*xs, *lens, params=prm, backend="cpu")
        ga = torch.autograd.grad(a, xs + param_list(prm), [torch.ones_like(o) for o in a])
        torch.set_num_threads(max(2, n))
        b = cross_modal_block(*xs, *lens, params=prm, backend="cpu")
        gb = torch.autograd.grad(b, xs + param_list(prm), [torch.ones_like(o) for o in b])
    finally:
        torch.set_num_threads(n)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(torch.equal(u, v) for u, v in zip(ga, gb))


def test_stages_are_named_in_profiler_traces():
    """torch.profiler shows the op's stages (projections, attention, combine, ...) as
    maven_fast::cross_modal.<pass>.<stage> ranges, with the GEMMs of each stage inside."""
    from torch.profiler import ProfilerActivity, profile

    prm = make_params()
    xs, lens = inputs((9, 40, 5))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = cross_modal_block(*xs, *lens, params=prm, backend="cpu", shortcuts=all_modes((9, 40, 5), "absorb"))
        torch.autograd.grad(out, xs, [torch.ones_like(o) for o in out])
    names = {e.key for e in prof.key_averages()}
    stages = {"forward": ("checks", "input_projections", "attention", "absorbed_values", "output_projections",
                          "combine"),
              "backward": ("checks", "combine", "output_projections", "absorbed_values", "attention",
                           "absorbed_queries", "input_projections")}
    missing = [f"maven_fast::cross_modal.{p}.{s}" for p, ss in stages.items() for s in ss
               if f"maven_fast::cross_modal.{p}.{s}" not in names]
    assert not missing, f"stages missing from the trace: {missing}"
    projections = next(e for e in prof.events() if e.name == "maven_fast::cross_modal.forward.input_projections")
    assert any("mm" in c.name for c in projections.cpu_children), "the projections' GEMMs are not inside their stage"


# --------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("t,shortcuts", [((3, 4, 2), False), ((3, 1, 1), True), ((2, 5, 3), "absorb")])
def test_dropout_gradcheck_float64(t, shortcuts):
    prm = make_params(8, 2, torch.float64, attn_dropout=0.3)
    xs, lens = inputs(t, b=2, d=8, dtype=torch.float64)
    modes = all_modes(t, shortcuts)

    def f(*args):
        torch.manual_seed(1234)  # same Philox seed on every evaluation
        return cross_modal_block(*args[:3], *lens, params=with_params(prm, args[3:]), dropout_p=0.25,
                                 training=True, backend="cpu", shortcuts=modes)

    # fast_mode checks random projections of the full Jacobian (every input and parameter).
    assert torch.autograd.gradcheck(f, (*xs, *param_list(prm)), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)
    # and the slow, element-wise mode on the activations
    assert torch.autograd.gradcheck(lambda *x: f(*x, *param_list(prm)), tuple(xs), eps=1e-6, atol=1e-6, rtol=1e-5)


def _saved(t, prm, xs, lens, modes, attn_p, out_p, seed=0):
    """The op's saved tensors by name."""
    rng = torch.tensor([seed, 0], dtype=torch.long)
    out = torch.ops.maven_fast.cross_modal_block(
        *[x.detach() for x in xs], *lens, prm.in_proj_weight, prm.in_proj_bias, prm.out_proj_weight,
        prm.out_proj_bias, prm.ln_weight, prm.ln_bias, prm.ln_eps, prm.num_heads, modes, attn_p, out_p, True, rng,
    )
    names = saved_names(modes, attn_p > 0, out_p > 0)
    assert len(names) == len(out[3])
    return dict(zip(names, out[3]))


def test_output_dropout_keep_rate_and_scale():
    t, p = (64, 32, 16), 0.3
    prm = make_params(64, 2)
    xs, lens = inputs(t, b=8, d=64)
    modes = plan_pathways(*t, 64, 2)
    with torch.no_grad():
        s0 = _saved(t, prm, xs, lens, modes, 0.0, 0.0)
        s1 = _saved(t, prm, xs, lens, modes, 0.0, p, seed=42)
    u0 = [s0[f"u_{m}"] for m in "vat"]
    u1 = [s1[f"u_{m}"] for m in "vat"]
    ratio = torch.cat([(b / a).flatten() for a, b in zip(u0, u1)])
    kept = ratio != 0
    n = ratio.numel()
    rate = kept.double().mean().item()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.allclose(ratio[kept], torch.full_like(ratio[kept], 1 / (1 - p)), rtol=1e-4)
    assert abs(ratio.double().mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)


def test_attention_dropout_keep_rate():
    # W_k = 0 makes the attention uniform over the valid keys, so psum (the sum
    # of the dropped-out probabilities) is (#kept / len) / (1 - p).
    t, p, d = (40, 50, 8), 0.2, 32
    prm = make_params(d, 2)
    for w in prm.in_proj_weight:
        w.data[d:2 * d] = 0
    xs, _ = inputs(t, b=6, d=d)
    lens = [torch.full((6,), ti) for ti in t]
    modes = [ABSORBED] * 6
    with torch.no_grad():
        saved = _saved(t, prm, xs, lens, modes, p, 0.0, seed=7)
    psum = torch.cat([saved[f"psum_{q}"].flatten() for q in PATHWAYS]).double()
    n_keys = sum(6 * 2 * t[[0, 0, 1, 1, 2, 2][q]] * t[KEY[q]] for q in range(6))
    rate = (psum * (1 - p)).mean().item()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n_keys) + 1e-6
    # the mean of the dropped-out probabilities is unbiased
    assert abs(psum.mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / n_keys) + 1e-6


# Every pathway mode: W_k = 0 (uniform attention), V = 1 (W_v = 0, b_v = 1) and an
# out_proj that copies head 1 of the modality's first pathway into features
# [0, dh) and head 2 of its second into [dh, D): then 3 u - x (u: the LayerNorm
# input, saved) holds, per query row, psum = (#kept keys / len) / (1 - p). The
# kept count per row must be a whole number, its mean (1 - p) len and its
# variance the binomial p (1 - p) len: without dropout, psum = 1 on every row
# and the mean alone would not show it (the dropped-out weights are unbiased).
KEEP_RATE_CASES = {
    "general": ((24, 30, 20), [GENERAL] * 6, 8),
    "absorbed": ((24, 30, 20), [ABSORBED] * 6, 8),
    # v2a, v2t, a2t, t2a key length 1 (one draw per row and head); a2v, t2v general
    "key_len_1": ((16, 1, 1), [KEY_LEN_1, KEY_LEN_1, GENERAL, KEY_LEN_1, GENERAL, KEY_LEN_1], 256),
}


@pytest.mark.parametrize("case", KEEP_RATE_CASES)
def test_attention_dropout_keep_rate_per_pathway_mode(case):
    t, modes, b = KEEP_RATE_CASES[case]
    p, d, h = 0.2, 32, 2
    dh = d // h
    prm = make_params(d, h)
    with torch.no_grad():
        for q in range(6):
            prm.in_proj_weight[q][d:] = 0                # W_k = W_v = 0
            prm.in_proj_bias[q][2 * d:] = 1              # b_v = 1: every value is 1
            prm.out_proj_weight[q].zero_()
            prm.out_proj_bias[q].zero_()
            part = slice(0, dh) if q % 2 == 0 else slice(dh, d)
            prm.out_proj_weight[q][part, part] = torch.eye(dh)
    xs, _ = inputs(t, b=b, d=d)
    lens = [torch.full((b,), ti) for ti in t]
    with torch.no_grad():
        saved = _saved(t, prm, xs, lens, modes, p, 0.0, seed=11)
    for q in range(6):
        m, n = QUERY[q], t[KEY[q]]
        col = 0 if q % 2 == 0 else dh
        psum = (3 * saved[f"u_{'vat'[m]}"][..., col] - xs[m].detach()[..., col]).double()
        kept = (psum * (1 - p) * n).flatten()  # kept keys per query row
        what = f"{PATHWAYS[q]} (mode {modes[q]})"
        assert (kept - kept.round()).abs().max() < 1e-3, f"{what}: kept counts are not whole numbers"
        rate = kept.mean().item() / n
        assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / kept.numel() / n), \
            f"{what}: keep rate {rate:.4f}, expected {1 - p}"
        var = kept.var().item() / (n * p * (1 - p))  # ~1 (standard error sqrt(2 / rows) <= 0.11 here)
        assert 0.5 < var < 1.5, f"{what}: kept-count variance {var:.3f} x the binomial one"


def test_dropout_masks_fresh_per_call_and_seeded():
    prm = make_params(attn_dropout=0.2)
    xs, lens = inputs((6, 5, 4))
    run = lambda: cross_modal_block(*xs, *lens, params=prm, dropout_p=0.2, training=True, backend="cpu")  # noqa: E731
    torch.manual_seed(5)
    a = run()
    b = run()
    torch.manual_seed(5)
    c = run()
    assert not torch.equal(a[0], b[0])
    assert all(torch.equal(u, v) for u, v in zip(a, c))
    # eval mode: no dropout, equals the reference
    out = cross_modal_block(*xs, *lens, params=prm, dropout_p=0.2, training=False, backend="cpu")
    ref = cross_modal_reference(*xs, *lens, prm, 0.2, False)
    assert all(rel_err(o, r) < 2e-5 for o, r in zip(out, ref))


@pytest.mark.parametrize("t,shortcuts,out_p", [((3, 4, 1), True, 0.2), ((3, 4, 1), True, 0.0), ((3, 4, 2), False, 0.0)])
def test_dropout_matches_reference_in_distribution(t, shortcuts, out_p):
    """Over many seeds, fused and reference outputs with dropout have the same mean
    AND the same spread. Attention dropout is unbiased, so the mean alone cannot
    see it missing; its variance can: with out_p = 0 it is the only randomness.
    (3, 4, 1) planned: v2a, a2v general, v2t, a2t key length 1, t2v, t2a absorbed;
    (3, 4, 2): general only."""
    prm = make_params(8, 2, attn_dropout=0.3)
    xs, lens = inputs(t, b=2, d=8)
    xs = [x.detach() for x in xs]
    modes = all_modes(t, shortcuts)
    n = 300
    with torch.no_grad():
        fused = [torch.stack(o) for o in zip(*[cross_modal_block(*xs, *lens, params=prm, dropout_p=out_p,
                                                                 training=True, backend="cpu", shortcuts=modes)
                                               for _ in range(n)])]
        ref = [torch.stack(o) for o in zip(*[cross_modal_reference(*xs, *lens, prm, out_p, True) for _ in range(n)])]
    for m, (f, r) in enumerate(zip(fused, ref)):
        # E[fused] = E[reference]: every element within 5 standard errors of the difference of the two means
        se = ((f.var(0) + r.var(0)) / n).sqrt()
        assert ((f.mean(0) - r.mean(0)).abs() <= 5 * se + 1e-6).all()
        # Var[fused] = Var[reference], summed over the elements of each item (the
        # ratio's standard error is <= 0.12 at n = 300 even for fully correlated elements)
        for i in range(f.shape[1]):
            vf, vr = f[:, i].var(0).sum().item(), r[:, i].var(0).sum().item()
            if vr > 1e-8:  # an item with randomness (one whose keys are all masked has none)
                assert 0.65 < vf / vr < 1.5, f"output {m}, item {i}: variance {vf:.4g} vs reference {vr:.4g}"
            else:
                assert vf < 1e-8, f"output {m}, item {i}: variance {vf:.4g} where the reference has none"


# --------------------------------------------------------------------------- op contract
@pytest.mark.parametrize("t,modes,p", [
    ((3, 4, 2), [GENERAL] * 6, 0.0),
    ((3, 1, 1), [KEY_LEN_1, KEY_LEN_1, ABSORBED, KEY_LEN_1, ABSORBED, KEY_LEN_1], 0.2),
    ((2, 5, 3), [ABSORBED] * 6, 0.2),
])
def test_opcheck(t, modes, p):
    args = op_args(t, modes, p, p)
    torch.library.opcheck(torch.ops.maven_fast.cross_modal_block.default, args)


def test_compile_fullgraph_equals_eager():
    from torch._inductor.utils import fresh_inductor_cache

    torch._dynamo.reset()
    block = CrossModalBlock(16, 2, attn_dropout=0.0, dropout=0.0, backend="cpu")
    xs, lens = inputs((5, 3, 1), b=2)
    compiled = torch.compile(block, fullgraph=True)
    # A private cache: the on-disk one is keyed without the custom op's fake
    # kernel, so graphs cached by an older build of the op could be replayed.
    with fresh_inductor_cache():
        out_c = compiled(*xs, *lens)
    out_e = block(*xs, *lens)
    for a, b in zip(out_c, out_e):
        assert rel_err(a, b) < 1e-6
    g_c = torch.autograd.grad(out_c, xs + list(block.parameters()), [torch.ones_like(o) for o in out_c])
    g_e = torch.autograd.grad(out_e, xs + list(block.parameters()), [torch.ones_like(o) for o in out_e])
    for a, b in zip(g_c, g_e):
        assert rel_err(a, b) < 1e-5


def test_compile_fullgraph_with_dropout_and_backward():
    """Compiled in training mode with attention and output dropout: the same masks as the
    uncompiled module under the same seed (values and every gradient), fresh masks on
    every call, and dropout did act."""
    from torch._inductor.utils import fresh_inductor_cache

    torch._dynamo.reset()
    block = CrossModalBlock(16, 2, attn_dropout=0.3, dropout=0.2, backend="cpu").train()
    t = (6, 5, 1)  # planned: v2a, a2v general, v2t, a2t key length 1, t2v, t2a absorbed
    xs, lens = inputs(t, b=3)
    wrt = xs + list(block.parameters())
    gs = [torch.randn(3, ti, 16) for ti in t]
    compiled = torch.compile(block, fullgraph=True)
    with fresh_inductor_cache():
        torch.manual_seed(3)
        out_c = compiled(*xs, *lens)
        g_c = torch.autograd.grad(out_c, wrt, gs)
        out_c2 = compiled(*xs, *lens)
    torch.manual_seed(3)
    out_e = block(*xs, *lens)
    g_e = torch.autograd.grad(out_e, wrt, gs)
    for a, b in zip(out_c, out_e):
        assert rel_err(a, b) < 1e-6
    for i, (a, b) in enumerate(zip(g_c, g_e)):
        assert rel_err(a, b) < 1e-5, f"gradient {i}: rel. err {rel_err(a, b):.2e}"
    assert not torch.equal(out_c2[0], out_c[0])  # new masks per call, also compiled
    with torch.no_grad():
        assert not torch.allclose(block.eval()(*xs, *lens)[0], out_e[0])


def test_module_backends_share_state_dict():
    block = CrossModalBlock(16, 2, attn_dropout=0.1, dropout=0.1)
    keys = set(block.state_dict())
    assert {f"attn_{p}.in_proj_weight" for p in PATHWAYS} <= keys
    assert {"layer_norm.weight", "layer_norm.bias"} <= keys
    block.eval()
    xs, lens = inputs((6, 1, 1))
    block.backend = "cpu"
    a = block(*xs, *lens)
    block.backend = "eager"
    b = block(*xs, *lens)
    assert all(rel_err(u, v) < 2e-5 for u, v in zip(a, b))
    with pytest.raises(ValueError, match="unknown backend"):
        block.backend = "gpu"


# --------------------------------------------------------------------------- bf16
def test_bf16_autocast():
    t = (9, 6, 1)
    prm = make_params(64, 2)
    xs, lens = inputs(t, b=2, d=64)
    prm64 = prm.cast(torch.float64)
    ref64 = cross_modal_reference(*[x.double() for x in xs], *lens, prm64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cross_modal_block(*xs, *lens, params=prm, backend="cpu")
    eager = cross_modal_reference(*[x.bfloat16() for x in xs], *lens, prm.cast(torch.bfloat16))
    for o, e, r in zip(out, eager, ref64):
        assert o.dtype == torch.bfloat16
        err_fused = (o.double() - r).abs().max().item()
        err_eager = (e.double() - r).abs().max().item()
        assert err_fused <= 2 * err_eager + 1e-3, (err_fused, err_eager)
    g = torch.autograd.grad(out, xs, [torch.ones_like(o) for o in out])
    g_ref = torch.autograd.grad(ref64, xs, [torch.ones_like(o) for o in ref64])
    for a, b in zip(g, g_ref):
        assert a.dtype == torch.float32
        assert rel_err(a.double(), b) < 0.05


@pytest.mark.parametrize("t,shortcuts", [((9, 6, 1), True), ((5, 7, 9), False), ((5, 7, 9), "absorb")])
def test_bf16_autocast_gradients_of_every_parameter(t, shortcuts):
    """Under bf16 autocast (fp32 parameters and inputs), the gradients of every input
    AND parameter obey SPEC 5: error vs float64 <= 2x that of eager PyTorch under the
    same autocast + one bf16 rounding (2^-8) of max(1, max|exact|)."""
    d = 32
    prm = make_params(d, 2)
    xs, lens = inputs(t, b=2, d=d)
    modes = all_modes(t, shortcuts)
    upstream = [0.1 + torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x) for x in xs]

    def run(fn, dtype, autocast):
        x = [v.detach().to(dtype).requires_grad_() for v in xs]
        p = with_params(prm, [v.detach().to(dtype).requires_grad_() for v in param_list(prm)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = fn(x, p)
        return torch.autograd.grad(out, x + param_list(p), [u.to(o.dtype) for u, o in zip(upstream, out)])

    exact = run(lambda x, p: cross_modal_reference(*x, *lens, p), torch.float64, False)
    eager = run(lambda x, p: cross_modal_reference(*x, *lens, p), torch.float32, True)
    fused = run(lambda x, p: cross_modal_block(*x, *lens, params=p, backend="cpu", shortcuts=modes),
                torch.float32, True)
    names = ["x_v", "x_a", "x_t"] + [f"{n}[{PATHWAYS[q]}]" for n in ("in_proj_weight", "in_proj_bias",
                                                                    "out_proj_weight", "out_proj_bias")
                                     for q in range(6)] + ["ln_weight", "ln_bias"]
    for name, f, e, r in zip(names, fused, eager, exact):
        assert f.dtype == torch.float32 and torch.isfinite(f).all(), name
        err_f, err_e = (f.double() - r).abs().max().item(), (e.double() - r).abs().max().item()
        tol = 2 * err_e + 2.0**-8 * max(1.0, r.abs().max().item())
        assert err_f <= tol, f"d {name}: error {err_f:.3g} vs fp64 exceeds {tol:.3g} (eager {err_e:.3g})"


@pytest.mark.parametrize("t,shortcuts", [((6, 5, 1), [GENERAL, KEY_LEN_1, ABSORBED, KEY_LEN_1, GENERAL, ABSORBED]),
                                         ((5, 7, 9), False)])
def test_float16_within_twice_eager_error(t, shortcuts):
    # fp16 tensors (no autocast): values and the gradients of every input and parameter, SPEC 5
    prm = make_params(32, 2)
    xs, lens = inputs(t, b=2, d=32)
    check_within_twice_eager(xs, lens, prm, all_modes(t, shortcuts), torch.float16, "cpu")


@pytest.mark.parametrize("t,shortcuts", [((17, 3, 1), True), ((5, 7, 9), False), ((5, 7, 9), "absorb"),
                                         ((3, 257, 130), False)])
def test_float64_values_and_gradients_match_reference(t, shortcuts):
    # gradcheck (above) checks the backward against the op's own forward; this checks the
    # forward (and the backward) against the float64 reference, to float64 precision.
    prm = make_params(16, 2, torch.float64)
    xs, lens = inputs(t, b=3, d=16, dtype=torch.float64)
    ref = cross_modal_reference(*xs, *lens, prm)
    out = cross_modal_block(*xs, *lens, params=prm, backend="cpu", shortcuts=all_modes(t, shortcuts))
    for i, (o, r) in enumerate(zip(out, ref)):
        assert o.dtype == torch.float64 and rel_err(o, r) < 1e-12, f"output {i}: rel. err {rel_err(o, r):.2e}"
    gs = [torch.randn_like(r) for r in ref]
    wrt = xs + param_list(prm)
    for i, (a, b) in enumerate(zip(torch.autograd.grad(out, wrt, gs), torch.autograd.grad(ref, wrt, gs))):
        assert rel_err(a, b) < 1e-11, f"gradient {i}: rel. err {rel_err(a, b):.2e}"


def test_fp32_floor_of_the_gpu_rule_sees_tf32():
    """The fp32 floor of the SPEC 5 rule the GPU tests use (cross_modal_cases.FLOOR): the
    CPU fp32 op passes it, a result computed from operands rounded to TF32's 10-bit
    mantissa (what a silent switch to TF32 dots does) fails it; the former floor, 1e-3
    for every dtype, let that through."""
    t = (9, 6, 1)
    prm = make_params(32, 2)
    xs, lens = inputs(t, b=2, d=32)
    check_within_twice_eager(xs, lens, prm, all_modes(t, True), torch.float32, "cpu")
    upstream = [0.1 + torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x) for x in xs]
    tf32 = lambda v: (v.detach().view(torch.int32) & ~0x1FFF).view(torch.float32)  # noqa: E731
    ref = lambda x, p: cross_modal_reference(*x, *lens, p)  # noqa: E731
    exact = values_and_grads(ref, xs, prm, upstream, torch.float64, "cpu")
    eager = values_and_grads(ref, xs, prm, upstream, torch.float32, "cpu")
    rounded = values_and_grads(ref, [tf32(x) for x in xs], with_params(prm, [tf32(p) for p in param_list(prm)]),
                               upstream, torch.float32, "cpu")
    with pytest.raises(AssertionError, match="exceeds"):
        assert_within_twice_eager(rounded[0], eager[0], exact[0], torch.float32, FLOOR[torch.float32], 1.0, "values")
    assert_within_twice_eager(rounded[0], eager[0], exact[0], torch.float32, 1e-3, 1.0, "values")


# --------------------------------------------------------------------------- bad input
def _call(xs, lens, prm, **kw):
    return cross_modal_block(*xs, *lens, params=prm, backend="cpu", **kw)


def test_bad_inputs_raise_clear_errors():
    prm = make_params()
    xs, lens = inputs((4, 3, 2))
    with pytest.raises(RuntimeError, match=r"x_a.*\[B, T, D\]"):
        _call([xs[0], torch.randn(3, 3, 12), xs[2]], lens, prm)
    with pytest.raises(RuntimeError, match=r"x_t.*\[B, T, D\]"):
        _call([xs[0], xs[1], torch.randn(2, 2, 16)], lens, prm)
    with pytest.raises(RuntimeError, match=r"len_a.*\[0, T\] = \[0, 3\]"):
        _call(xs, [lens[0], torch.tensor([3, 4, 0]), lens[2]], prm)
    with pytest.raises(RuntimeError, match=r"len_v.*\[0, T\]"):
        _call(xs, [torch.tensor([-1, 0, 0]), lens[1], lens[2]], prm)
    with pytest.raises(RuntimeError, match=r"len_t.*shape \[B\]"):
        _call(xs, [lens[0], lens[1], torch.tensor([1, 1])], prm)
    with pytest.raises(RuntimeError, match=r"len_v.*integer"):
        _call(xs, [lens[0].float(), lens[1], lens[2]], prm)
    with pytest.raises(RuntimeError, match=r"x_a.*dtype"):
        _call([xs[0], xs[1].double(), xs[2]], lens, prm)
    with pytest.raises(RuntimeError, match=r"in_proj_weight.*dtype"):
        _call([x.double() for x in xs], lens, prm)  # float64 activations, float32 weights
    with pytest.raises(RuntimeError, match=r"x_v.*\[B, T, D\]"):
        _call([xs[0][0], xs[1], xs[2]], lens, prm)
    bad = make_params(16, 2)
    bad.in_proj_weight[3] = torch.randn(48, 8)
    with pytest.raises(RuntimeError, match=r"attn_a2t\.in_proj_weight.*\[48, 16\]"):
        _call(xs, lens, bad)
    bad_h = make_params(16, 2)
    bad_h.num_heads = 3
    with pytest.raises(RuntimeError, match=r"num_heads = 3.*divide"):
        _call(xs, lens, bad_h)
    with pytest.raises(RuntimeError, match=r"key length 1"):
        _call(xs, lens, prm, shortcuts=[KEY_LEN_1] * 6)
    with pytest.raises(RuntimeError, match=r"no time steps"):
        _call([xs[0], torch.randn(3, 0, 16), xs[2]], [lens[0], torch.zeros(3, dtype=torch.long), lens[2]], prm)


def test_dropout_without_rng_draws_from_the_default_generator():
    """rng=None: the seed comes from torch's CPU generator (reproducible under
    manual_seed, new masks per call); the saved `rng` reproduces the call."""
    args = list(op_args((3, 4, 2), [GENERAL] * 6, 0.2, 0.1))
    explicit = args[-1]
    args[-1] = None
    op = torch.ops.maven_fast.cross_modal_block
    with torch.no_grad():
        torch.manual_seed(7)
        a, b = op(*args), op(*args)
        torch.manual_seed(7)
        a2 = op(*args)
        assert not torch.equal(a[0], b[0]) and not torch.equal(a[3][-1], b[3][-1])
        assert torch.equal(a[0], a2[0]) and torch.equal(a[3][-1], a2[3][-1])
        replay = op(*args[:-1], a[3][-1].clone())  # the saved (seed, offset) gives the same masks
        assert all(torch.equal(x, y) for x, y in zip(a[:3], replay[:3]))
        saved_rng = op(*args[:-1], explicit)[3][-1]
        assert saved_rng.tolist() == explicit.tolist()


def test_bad_rng_is_an_error():
    args = list(op_args((3, 4, 2), [GENERAL] * 6, 0.2, 0.0))
    args[-1] = torch.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match=r"`rng` must be an int64 tensor \[2\]"):
        torch.ops.maven_fast.cross_modal_block(*args)


def test_mismatched_heads_between_modules():
    attns = {p: nn.MultiheadAttention(16, 4 if p == "t2a" else 2, batch_first=True) for p in PATHWAYS}
    with pytest.raises(ValueError, match=r"t2a.*num_heads"):
        CrossModalParams.from_modules(attns, nn.LayerNorm(16))


def test_cuda_backend_refuses_cpu_tensors_and_triton_runs_them_interpreted():
    prm = make_params()
    xs, lens = inputs((4, 3, 2))
    with pytest.raises(BackendUnavailable, match=r"'cuda' runs CUDA tensors, got tensors on cpu"):
        cross_modal_block(*xs, *lens, params=prm, backend="cuda")
    if backend_problems("triton", "cpu"):  # no triton, or TRITON_INTERPRET unset: says why
        with pytest.raises(BackendUnavailable, match="triton"):
            cross_modal_block(*xs, *lens, params=prm, backend="triton")
        return
    out = cross_modal_block(*xs, *lens, params=prm, backend="triton")  # Triton's CPU interpreter
    ref = cross_modal_block(*xs, *lens, params=prm, backend="cpu")
    assert all(rel_err(o, r) < 2e-5 for o, r in zip(out, ref))


# --------------------------------------------------------------------------- regressor shortcut
def test_frame_concat_linear_equals_linear_on_concat():
    b, t = 3, 7
    lin = nn.Linear(3 * 16, 12)
    v = torch.randn(b, t, 16, requires_grad=True)
    a = torch.randn(b, 1, 16, requires_grad=True)
    s = torch.randn(b, 16, requires_grad=True)
    ref = lin(torch.cat([v, a.expand(b, t, 16), s[:, None].expand(b, t, 16)], -1))
    out = frame_concat_linear(lin.weight, lin.bias, v, a, s)
    assert rel_err(out, ref) < 1e-6
    g = torch.randn_like(ref)
    for x, y in zip(torch.autograd.grad(out, [v, a, s, lin.weight, lin.bias], g),
                    torch.autograd.grad(ref, [v, a, s, lin.weight, lin.bias], g)):
        assert rel_err(x, y) < 1e-5
    with pytest.raises(ValueError, match="constant over frames"):
        frame_concat_linear(lin.weight, lin.bias, v, torch.randn(b, 2, 16), s)
    with pytest.raises(ValueError, match="input features"):
        frame_concat_linear(lin.weight, lin.bias, v, a)
