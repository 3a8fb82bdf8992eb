"""The fused cross-modal block, CUDA backend (``backend="cuda"``).

GPU tests (``@pytest.mark.gpu``, skipped without a GPU) run the CPU test
matrix of tests/test_cross_modal.py on CUDA with the SPEC 5 GPU rule: the
fused op's error against the fp64 eager reference is at most twice the error
of eager PyTorch in the same dtype (plus a small floor), for the values and
the gradients of every input and parameter, in fp32, fp16 and bf16. With
dropout on, the CUDA op equals the CPU op given the same ``rng`` (same Philox
masks). The registration test runs everywhere.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import maven_fast
from maven_fast.nn import CrossModalBlock
from maven_fast.ops.cross_modal import (
    ABSORBED,
    GENERAL,
    KEY_LEN_1,
    PATHWAYS,
    CrossModalParams,
    cross_modal_block,
    cross_modal_reference,
    plan_pathways,
    saved_names,
)
from cross_modal_cases import (all_modes, assert_within_twice_eager, check_bitwise_deterministic,
                               check_padding_never_read, inputs, make_params, param_list, rel_err, values_and_grads,
                               with_params)


DEV = "cuda"
# Floor of the GPU rule, relative to the largest reference value of each
# tensor: ~1e-5 in fp32 (SPEC 5), about one rounding of the output in fp16
# and two in bf16 (the absorbed pathways keep bf16 intermediates, qt and z,
# and add dK into a bf16 gradient: a bf16 ulp or so more than eager there).
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 2.0**-7}


# --------------------------------------------------------------------------- registration (CPU CI too)
def test_cuda_kernels_registered_when_built():
    if not maven_fast.build_info()["cuda_kernels"]:
        pytest.skip("maven_fast._C was built without CUDA kernels")
    for op in ("maven_fast::cross_modal_block", "maven_fast::cross_modal_block_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"), op


# --------------------------------------------------------------------------- helpers
def _leaf(t, dtype, device):
    return t.detach().to(device=device, dtype=dtype).requires_grad_()


def _params_on(prm: CrossModalParams, dtype, device) -> CrossModalParams:
    return with_params(prm, [_leaf(p, dtype, device) for p in param_list(prm)])


def check_cuda(t, shortcuts, d=16, h=2, b=3, dtype=torch.float32, lengths=None):
    prm = make_params(d, h)
    xs, lens = inputs(t, b, d, lengths=lengths)
    modes = all_modes(t, shortcuts)
    upstream = [torch.randn(b, ti, d, dtype=torch.float64) for ti in t]
    lens_dev = [l.to(DEV) for l in lens]

    def ref(x, p):
        return cross_modal_reference(*x, *[l.to(x[0].device) for l in lens], p)

    def fused(x, p):
        return cross_modal_block(*x, *lens_dev, params=p, backend="cuda", shortcuts=modes)

    exact = values_and_grads(ref, xs, prm, upstream, torch.float64, "cpu")
    eager = values_and_grads(ref, xs, prm, upstream, dtype, DEV)
    out = values_and_grads(fused, xs, prm, upstream, dtype, DEV)
    assert_within_twice_eager(out[0], eager[0], exact[0], dtype, FLOOR[dtype], 1e-3, "value")
    assert_within_twice_eager(out[1], eager[1], exact[1], dtype, FLOOR[dtype], 1e-3, "gradient")


DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# --------------------------------------------------------------------------- values and gradients
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t", [(17, 3, 1), (1, 17, 3), (3, 1, 64), (100, 17, 1), (257, 3, 1), (1, 1, 1), (5, 7, 9)])
@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_cuda_matches_reference(t, shortcuts, dtype):
    check_cuda(t, shortcuts, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d,h", [(128, 2), (256, 2), (512, 2), (64, 4), (24, 3), (24, 2), (64, 2), (256, 8)])
@pytest.mark.parametrize("shortcuts", [False, "absorb"])
def test_cuda_head_sizes(d, h, shortcuts, dtype):
    # head sizes 64, 128, 256 (presets), 16, 8, 12, 32; absorbed pathways use D (up to 512)
    check_cuda((9, 6, 1), shortcuts, d=d, h=h, b=2, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_long_keys_and_large_absorbed_width(dtype):
    check_cuda((3, 257, 130), False, b=2, dtype=dtype)
    check_cuda((70, 257, 130), "absorb", b=2, dtype=dtype)
    check_cuda((64, 100, 1), True, d=1024, h=2, b=2, dtype=dtype)  # absorbed dk = dv = 1024


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t", [(130, 257, 65), (256, 400, 64)])
def test_cuda_long_general_pathways(t, dtype):
    # every pathway general over hundreds of keys and queries: many key tiles and query blocks
    check_cuda(t, False, d=64, h=2, b=2, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("t,shortcuts", [((40, 70, 1), True), ((40, 70, 33), False), ((40, 70, 33), "absorb")])
def test_cuda_bitwise_deterministic_many_programs(dtype, t, shortcuts):
    # 512 items, dropout on: far more attention and combine programs than SMs
    check_bitwise_deterministic("cuda", t, shortcuts, b=512, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_cuda_length_edges(shortcuts, dtype):
    t = (5, 4, 3)
    lens = [torch.tensor([0, 1, ti - 1, ti]) for ti in t]
    check_cuda(t, shortcuts, b=4, lengths=lens, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_cuda_padded_keys_are_never_read(shortcuts):
    t = (6, 5, 4)
    prm = _params_on(make_params(), torch.float32, DEV)
    xs, lens = inputs(t)
    xs = [x.detach().to(DEV) for x in xs]
    lens = [l.to(DEV) for l in lens]
    modes = all_modes(t, shortcuts)
    with torch.no_grad():
        out = cross_modal_block(*xs, *lens, params=prm, backend="cuda", shortcuts=modes)
        mask = torch.arange(t[1], device=DEV)[None, :] >= lens[1][:, None]
        x_a2 = torch.where(mask[..., None], torch.full_like(xs[1], float("nan")), xs[1])
        out2 = cross_modal_block(xs[0], x_a2, xs[2], *lens, params=prm, backend="cuda", shortcuts=modes)
    assert torch.equal(out[0], out2[0]) and torch.equal(out[2], out2[2])


@pytest.mark.gpu
@pytest.mark.parametrize("t,shortcuts", [((6, 5, 4), False), ((6, 5, 4), "absorb"), ((9, 1, 1), True),
                                         ((3, 257, 130), False), ((70, 257, 130), "absorb")])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_cuda_padded_steps_are_never_read_and_get_zero_gradient(t, shortcuts, p):
    # NaN at every padded step; items end inside a 32-key tile (255 of 257, 129 of 130).
    modes = all_modes(t, shortcuts)
    if isinstance(modes, bool):
        modes = plan_pathways(*t, 16, 2, shortcuts=modes)
    check_padding_never_read(torch.ops.maven_fast.cross_modal_block, torch.ops.maven_fast.cross_modal_block_backward,
                             t, modes, device=DEV, attn_p=p, out_p=p)


@pytest.mark.gpu
def test_cuda_fully_masked_pathway_gives_out_proj_bias():
    t = (4, 3, 2)
    prm = _params_on(make_params(), torch.float32, DEV)
    xs, _ = inputs(t, b=1)
    xs = [x.detach().to(DEV) for x in xs]
    lens = [torch.tensor([4], device=DEV), torch.tensor([0], device=DEV), torch.tensor([0], device=DEV)]
    for sc in (False, True, "absorb"):
        with torch.no_grad():
            out = cross_modal_block(*xs, *lens, params=prm, backend="cuda", shortcuts=all_modes(t, sc))
            s = (xs[0] + prm.out_proj_bias[0] + prm.out_proj_bias[1]) / 3
            expect = nn.functional.layer_norm(s, (16,), prm.ln_weight, prm.ln_bias, prm.ln_eps)
        assert rel_err(out[0], expect) < 1e-5
        assert torch.isfinite(torch.cat([o.flatten() for o in out])).all()


@pytest.mark.gpu
def test_cuda_deterministic():
    # No atomics: two runs give bitwise equal values and gradients.
    t = (70, 33, 5)
    prm = make_params(64, 2)
    xs, lens = inputs(t, b=3, d=64)
    up = [torch.randn(3, ti, 64, dtype=torch.float64) for ti in t]
    lens = [l.to(DEV) for l in lens]
    for modes in ([GENERAL] * 6, all_modes(t, "absorb")):
        runs = [
            values_and_grads(
                lambda x, p: cross_modal_block(*x, *lens, params=p, backend="cuda", shortcuts=modes),
                xs, prm, up, torch.float32, DEV)
            for _ in range(2)
        ]
        for a, b in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1]):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------- dropout: same masks as the CPU
def _op_args(t, modes, attn_p, out_p, device, d=16, h=2, b=3, seed=11):
    torch.manual_seed(seed)
    prm = make_params(d, h)
    xs, lens = inputs(t, b, d)
    rng = torch.tensor([987654321987, 3], dtype=torch.long)  # stays on the CPU for every device
    return (*[x.detach().to(device) for x in xs], *[l.to(device) for l in lens],
            *[[p.detach().to(device) for p in ps] for ps in
              (prm.in_proj_weight, prm.in_proj_bias, prm.out_proj_weight, prm.out_proj_bias)],
            prm.ln_weight.detach().to(device), prm.ln_bias.detach().to(device), prm.ln_eps, h, modes,
            attn_p, out_p, True, rng)


@pytest.mark.gpu
@pytest.mark.parametrize("t,shortcuts", [((3, 4, 2), False), ((3, 1, 1), True), ((2, 5, 3), "absorb"),
                                         ((40, 33, 6), False), ((40, 33, 6), "absorb"), ((64, 1, 1), True)])
def test_cuda_dropout_equals_cpu(t, shortcuts):
    modes = all_modes(t, shortcuts)
    if isinstance(modes, bool):
        modes = plan_pathways(*t, 16, 2, shortcuts=modes)
    attn_p, out_p = 0.3, 0.25
    cpu = _op_args(t, modes, attn_p, out_p, "cpu")
    gpu = _op_args(t, modes, attn_p, out_p, DEV)
    op, bwd = torch.ops.maven_fast.cross_modal_block, torch.ops.maven_fast.cross_modal_block_backward
    with torch.no_grad():
        out_c, out_g = op(*cpu), op(*gpu)
        for a, b in zip(out_c[:3], out_g[:3]):
            assert rel_err(b.cpu(), a) < 1e-5
        names = saved_names(modes, attention_dropout=True, output_dropout=True)
        for n, a, b in zip(names, out_c[3], out_g[3]):
            b = b.cpu()
            if n.startswith("u_"):  # the output-dropout mask itself: identical zeros
                assert torch.equal(a == 0, b == 0), n
            if a.is_floating_point() and torch.isfinite(a).all():
                assert rel_err(b, a) < 1e-5, n
            else:
                assert torch.equal(torch.isfinite(a), torch.isfinite(b)), n
        gs = [torch.randn_like(o) for o in out_c[:3]]
        g_c = bwd(*gs, *cpu[:-1], out_c[3])
        g_g = bwd(*[g.to(DEV) for g in gs], *gpu[:-1], out_g[3])
    for i, (a, b) in enumerate(zip(g_c, g_g)):
        assert rel_err(b.cpu(), a) < 2e-5, f"gradient {i}"


@pytest.mark.gpu
def test_cuda_dropout_public_api_equals_cpu():
    # The same explicit rng gives the same masks on every fused backend.
    t = (6, 5, 4)
    prm = make_params(16, 2, attn_dropout=0.2)
    xs, lens = inputs(t)

    def run(device):
        x = [_leaf(v, torch.float32, device) for v in xs]
        p = _params_on(prm, torch.float32, device)
        out = cross_modal_block(*x, *[l.to(device) for l in lens], params=p, dropout_p=0.2, training=True,
                                backend="cpu" if device == "cpu" else "cuda", rng=torch.tensor([5, 9]))
        g = torch.autograd.grad(out, x + param_list(p), [torch.ones_like(o) for o in out])
        return out, g

    (oc, gc), (og, gg) = run("cpu"), run(DEV)
    for a, b in zip(oc, og):
        assert rel_err(b.detach().cpu(), a.detach()) < 1e-5
    for a, b in zip(gc, gg):
        assert rel_err(b.cpu(), a) < 2e-5


# --------------------------------------------------------------------------- op contract
@pytest.mark.gpu
@pytest.mark.parametrize("t,modes,p", [
    ((3, 4, 2), [GENERAL] * 6, 0.0),
    ((3, 1, 1), [KEY_LEN_1, KEY_LEN_1, ABSORBED, KEY_LEN_1, ABSORBED, KEY_LEN_1], 0.2),
    ((2, 5, 3), [ABSORBED] * 6, 0.2),
])
def test_cuda_opcheck(t, modes, p):
    args = list(_op_args(t, modes, p, p, DEV, d=8, b=2))
    if not p:
        args[-1] = None
    torch.library.opcheck(torch.ops.maven_fast.cross_modal_block.default, tuple(args))


@pytest.mark.gpu
def test_cuda_compile_fullgraph_equals_eager():
    from torch._inductor.utils import fresh_inductor_cache

    torch._dynamo.reset()
    block = CrossModalBlock(16, 2, attn_dropout=0.0, dropout=0.0, backend="cuda").to(DEV)
    xs, lens = inputs((5, 3, 1), b=2)
    xs = [x.detach().to(DEV).requires_grad_() for x in xs]
    lens = [l.to(DEV) for l in lens]
    compiled = torch.compile(block, fullgraph=True)
    with fresh_inductor_cache():
        out_c = compiled(*xs, *lens)
    out_e = block(*xs, *lens)
    for a, b in zip(out_c, out_e):
        assert rel_err(a, b) < 1e-6
    g_c = torch.autograd.grad(out_c, xs + list(block.parameters()), [torch.ones_like(o) for o in out_c])
    g_e = torch.autograd.grad(out_e, xs + list(block.parameters()), [torch.ones_like(o) for o in out_e])
    for a, b in zip(g_c, g_e):
        assert rel_err(a, b) < 1e-5


@pytest.mark.gpu
def test_cuda_graph_capture_skips_the_host_length_check():
    # Under capture the lengths are not read on the host (no sync); replays follow new lengths.
    t = (6, 5, 4)
    prm = _params_on(make_params(), torch.float32, DEV)
    xs, lens = inputs(t)
    xs = [x.detach().to(DEV) for x in xs]
    lens = [l.to(DEV) for l in lens]
    modes = all_modes(t, "absorb")

    def step():
        return cross_modal_block(*xs, *lens, params=prm, backend="cuda", shortcuts=modes)

    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            step()  # warm-up (cuBLAS handles, allocator)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step()
        new_lens = [torch.randint(0, ti + 1, (3,)) for ti in t]
        for l, n in zip(lens, new_lens):
            l.copy_(n)
        graph.replay()
        expect = step()
    for a, b in zip(static_out, expect):
        assert rel_err(a, b) < 1e-6


@pytest.mark.gpu
def test_cuda_bad_inputs_raise_clear_errors():
    prm = _params_on(make_params(), torch.float32, DEV)
    xs, lens = inputs((4, 3, 2))
    xs = [x.detach().to(DEV) for x in xs]
    lens = [l.to(DEV) for l in lens]
    with pytest.raises(RuntimeError, match=r"len_a.*\[0, T\] = \[0, 3\]"):
        cross_modal_block(*xs, lens[0], torch.tensor([3, 4, 0], device=DEV), lens[2], params=prm, backend="cuda")
    args = list(_op_args((4, 3, 2), [GENERAL] * 6, 0.0, 0.0, DEV))
    args[:3] = [a.double() for a in args[:3]]
    for i in range(6, 12):
        args[i] = [w.double() for w in args[i]] if isinstance(args[i], list) else args[i].double()
    with pytest.raises(RuntimeError, match=r"float64|unsupported dtype"):
        torch.ops.maven_fast.cross_modal_block(*args)


@pytest.mark.gpu
def test_cuda_module_and_state_dict_across_backends():
    block = CrossModalBlock(16, 2, attn_dropout=0.1, dropout=0.1).to(DEV).eval()
    xs, lens = inputs((6, 1, 1))
    xs = [x.detach().to(DEV) for x in xs]
    lens = [l.to(DEV) for l in lens]
    with torch.no_grad():
        block.backend = "cuda"
        a = block(*xs, *lens)
        block.backend = "eager"
        b = block(*xs, *lens)
    assert all(rel_err(u, v) < 2e-5 for u, v in zip(a, b))
    assert {f"attn_{p}.in_proj_weight" for p in PATHWAYS} <= set(block.state_dict())
