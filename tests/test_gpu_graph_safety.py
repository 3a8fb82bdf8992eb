"""The GPU ops in CUDA graphs and at the edges of launch geometry (GPU-marked:
skipped without a GPU, written to pass on one).

- Dropout is graph-safe: a captured forward + backward draws new masks on every
  replay (seed and offset from the device's generator, read by the kernels),
  and each replay equals the op called eagerly with that replay's saved rng.
- No call synchronises with the host (torch's sync debug mode turns any
  synchronising call into an error).
- ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) of the whole model in
  training mode: new masks per step, no graph skipped, eval equal to eager.
- Launch geometry: more than 65535 batch-head pairs (the Triton grids' y/z
  limit); inputs on a second GPU while another is current.
- The Triton polar head's last-program reduction over hundreds of programs is
  bitwise reproducible (a missing barrier before its ticket shows here).
"""
from __future__ import annotations

import pytest
import torch

from maven_fast import MAVEN
from maven_fast.backends import backend_problems
from maven_fast.ops import polar_head
from maven_fast.ops.cross_modal import ABSORBED, GENERAL, KEY_LEN_1, _triton_op, cross_modal_block
from cross_modal_cases import inputs, make_params, param_list, rel_err, with_params
from test_model_backends import inputs as model_inputs
from test_model_backends import small_config

pytestmark = pytest.mark.gpu
BACKENDS = ["cuda", "triton"]
MIXED = [GENERAL, ABSORBED, ABSORBED, GENERAL, GENERAL, ABSORBED]
ITEMS = [GENERAL, KEY_LEN_1, ABSORBED, KEY_LEN_1, GENERAL, ABSORBED]


def _require(backend: str) -> None:
    problems = backend_problems(backend, "cuda")
    if problems:
        pytest.skip("; ".join(problems))


def _ops(backend: str):
    if backend == "cuda":
        return torch.ops.maven_fast.cross_modal_block, torch.ops.maven_fast.cross_modal_block_backward
    return _triton_op(), torch.ops.maven_fast.cross_modal_block_triton_backward


def _op_args(t, modes, b=3, d=32, h=2, p=0.2, device="cuda", dtype=torch.float32):
    prm = make_params(d, h, dtype)
    xs, lens = inputs(t, b, d, dtype=dtype)
    on = lambda ts: [v.detach().to(device) for v in ts]  # noqa: E731
    return (*on(xs), *on(lens), on(prm.in_proj_weight), on(prm.in_proj_bias), on(prm.out_proj_weight),
            on(prm.out_proj_bias), prm.ln_weight.detach().to(device), prm.ln_bias.detach().to(device), prm.ln_eps,
            h, modes, p, p, True, None)


# --------------------------------------------------------------------------- CUDA graphs
# bf16: the CUDA backend's general pathways run on the tensor-core kernels, the
# absorbed ones on the SIMT kernels (d = 128, h = 2: head size 64).
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_replays_draw_new_masks_each_equal_to_an_eager_call(backend, dtype):
    _require(backend)
    fwd, bwd = _ops(backend)
    args = _op_args((20, 33, 5), MIXED, d=32 if dtype == torch.float32 else 128, dtype=dtype)
    upstream = [torch.randn_like(x) for x in args[:3]]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: autotuning and allocations outside the capture
        for _ in range(2):
            out = fwd(*args)
            bwd(*upstream, *args[:-1], out[3])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fwd(*args)
        grads = bwd(*upstream, *args[:-1], out[3])
    replays = []
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        replays.append(([o.clone() for o in out[:3]], out[3][-1].clone(), [g.clone() for g in grads]))
    (o1, r1, _), (o2, r2, _) = replays
    assert not torch.equal(r1, r2), "two replays used the same seed and offset"
    assert not torch.equal(o1[0], o2[0]), "two replays drew the same masks"
    for outs, rng, gs in replays:
        eager = fwd(*args[:-1], rng)
        assert torch.equal(eager[3][-1].cpu(), rng.cpu())
        assert all(torch.equal(a, b) for a, b in zip(outs, eager[:3]))
        eager_grads = bwd(*upstream, *args[:-1], eager[3])
        assert all(torch.equal(a, b) for a, b in zip(gs, eager_grads))


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_and_backward_never_synchronise(backend):
    _require(backend)
    prm = make_params(32, 2, attn_dropout=0.2)
    xs, lens = inputs((9, 14, 1), b=3, d=32)
    x = [v.detach().cuda().requires_grad_() for v in xs]
    p = [v.detach().cuda().requires_grad_() for v in param_list(prm)]
    lens = [v.cuda() for v in lens]
    params = with_params(prm, p)

    def step():
        out = cross_modal_block(*x, *lens, params=params, dropout_p=0.1, training=True, backend=backend,
                                shortcuts=ITEMS)
        torch.autograd.grad(out, x + p, [torch.ones_like(o) for o in out])

    step()  # warm-up (Triton autotuning benchmarks synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_overhead_compile_of_the_model_in_training(backend):
    _require(backend)
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = small_config("paper")
    cfg.cross_modal.dropout = 0.1
    torch.manual_seed(0)
    model = MAVEN(cfg, backend=backend).cuda().train()
    args, lengths, targets, mask = model_inputs(cfg, pooled=False)
    args = [a.cuda() for a in args]
    lengths = {k: v.cuda() for k, v in lengths.items()}
    targets, mask = targets.cuda(), mask.cuda()
    compiled = torch.compile(model, mode="reduce-overhead")
    outs = []
    for _ in range(4):
        out = compiled(*args, **lengths, targets=targets, mask=mask)
        out.loss.backward()
        outs.append(out.valence_arousal.detach().clone())
    assert all(torch.isfinite(o).all() for o in outs)
    assert not torch.equal(outs[-1], outs[-2]), "CUDA-graph replays reused one dropout mask"
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    model.eval()
    with torch.no_grad():
        got = compiled(*args, **lengths).valence_arousal.clone()
        model.set_backend("eager")
        ref = model(*args, **lengths).valence_arousal
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- launch geometry
@pytest.mark.parametrize("backend", BACKENDS)
def test_more_than_65535_batch_head_pairs(backend):
    _require(backend)
    b, d, h = 33000, 16, 2  # B * H = 66000
    t = (3, 4, 1)
    prm = make_params(d, h)
    xs, lens = inputs(t, b, d)
    gs = [torch.randn_like(x) for x in xs]

    def run(device, name):
        x = [v.detach().to(device).requires_grad_() for v in xs]
        out = cross_modal_block(*x, *[v.to(device) for v in lens], params=prm if device == "cpu" else _on(prm),
                                backend=name, shortcuts=ITEMS)
        return out, torch.autograd.grad(out, x, [g.to(device) for g in gs])

    (ref, gref), (got, ggot) = run("cpu", "cpu"), run("cuda", backend)
    for a, r in zip(list(got) + list(ggot), list(ref) + list(gref)):
        assert rel_err(a.detach().cpu(), r.detach()) < 1e-4


def _on(prm, device="cuda"):
    return with_params(prm, [v.detach().to(device) for v in param_list(prm)])


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_on_the_second_gpu(backend):
    _require(backend)
    prm = make_params(16, 2, attn_dropout=0.2)
    xs, lens = inputs((7, 9, 1), b=3, d=16)
    rng = torch.tensor([77, 3])
    results = {}
    for device in ("cpu", "cuda:1"):
        torch.cuda.set_device(0)  # another GPU is current
        name = "cpu" if device == "cpu" else backend
        x = [v.detach().to(device) for v in xs]
        results[device] = cross_modal_block(*x, *[v.to(device) for v in lens], params=_on(prm, device),
                                            dropout_p=0.1, training=True, backend=name, shortcuts=ITEMS, rng=rng)
        assert all(o.device == torch.device(device) for o in results[device])
    for a, r in zip(results["cuda:1"], results["cpu"]):
        assert rel_err(a.cpu(), r) < 1e-5
    x = torch.randn(50, 32)
    w, bias = torch.randn(2, 32) / 6, torch.randn(2)
    ref = polar_head(x, w, bias, backend="cpu")
    got = polar_head(x.to("cuda:1"), w.to("cuda:1"), bias.to("cuda:1"), backend=backend)
    assert rel_err(got.valence_arousal.cpu(), ref.valence_arousal) < 1e-5


# --------------------------------------------------------------------------- reductions
def test_triton_polar_head_reduction_is_reproducible_over_many_programs():
    _require("triton")
    n, d = 2_000_000, 64  # hundreds of programs, each over many row tiles
    x = torch.randn(n, d, device="cuda")
    w = torch.randn(2, d, device="cuda") / 8
    b = torch.randn(2, device="cuda")
    target = torch.rand(n, 2, device="cuda") * 2 - 1
    grads = []
    for _ in range(20):
        xx, ww, bb = (t.clone().requires_grad_() for t in (x, w, b))
        out = polar_head(xx, ww, bb, target, backend="triton")
        (out.loss + out.valence_arousal.sum()).backward()
        grads.append((out.loss.detach().clone(), ww.grad.clone(), bb.grad.clone()))
    for g in grads[1:]:
        assert all(torch.equal(a, r) for a, r in zip(g, grads[0]))
    x64, w64, b64 = (t.double().cpu().requires_grad_() for t in (x, w, b))
    ref = polar_head(x64, w64, b64, target.double().cpu(), backend="eager")
    (ref.loss + ref.valence_arousal.sum()).backward()
    assert rel_err(grads[0][1].double().cpu(), w64.grad) < 1e-4
    assert rel_err(grads[0][2].double().cpu(), b64.grad) < 1e-4
