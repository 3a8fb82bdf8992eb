"""The Triton backend of the cross-modal block against the eager reference and the
CPU backend. Without a GPU the kernels run in Triton's interpreter on CPU tensors
(TRITON_INTERPRET=1, set by conftest.py): tiny shapes, float32 and float16 (the
interpreter gets bf16 wrong). With a GPU the same tests run the compiled kernels on
CUDA tensors (``DEVICE``), and the tests marked ``gpu`` add the GPU-only checks."""
from __future__ import annotations

import pytest
import torch

from maven_fast.backends import backend_problems
from maven_fast.nn import CrossModalBlock
from maven_fast.ops.cross_modal import (
    ABSORBED,
    GENERAL,
    KEY_LEN_1,
    cross_modal_block,
    cross_modal_reference,
    saved_names,
)
from cross_modal_cases import (all_modes, check_against_reference, check_bitwise_deterministic,
                               check_padding_never_read, check_within_twice_eager, inputs, make_params, op_args,
                               param_list, rel_err, with_params)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(bool(backend_problems("triton", DEVICE)),
                                reason="; ".join(backend_problems("triton", DEVICE)))


def _triton_op():
    from maven_fast.ops.cross_modal import _triton_op

    return _triton_op()


def run_block(xs, lens, prm, backend, modes, grads, **kw):
    """Outputs and the gradients of every input and parameter."""
    out = cross_modal_block(*xs, *lens, params=prm, backend=backend, shortcuts=modes, **kw)
    return out, torch.autograd.grad(out, xs + param_list(prm), grads)


def on_device(xs, lens, prm, device=DEVICE):
    """Copies of inputs (leaves), lengths and parameters (leaves) on ``device``."""
    xs = [x.detach().to(device).requires_grad_() for x in xs]
    lens = [length.to(device) for length in lens]
    return xs, lens, with_params(prm, [p.detach().to(device).requires_grad_() for p in param_list(prm)])


def args_on_device(args, device=DEVICE):
    """The op's arguments (``op_args``) with every tensor but the rng on ``device``."""
    move = lambda a: (a.to(device) if isinstance(a, torch.Tensor)  # noqa: E731
                      else [t.to(device) for t in a] if isinstance(a, list) and a and isinstance(a[0], torch.Tensor)
                      else a)
    return (*map(move, args[:-1]), args[-1])


# --------------------------------------------------------------------------- every device (interpreter on the CPU)
@pytest.mark.parametrize("t,shortcuts", [
    ((5, 7, 3), False),          # general everywhere
    ((5, 7, 3), "absorb"),       # weight absorption everywhere
    ((9, 1, 1), True),           # reference_mlp-like: key length 1 + absorbed a2v, t2v
    ((1, 37, 2), "absorb"),      # one query row; 37 keys: several key blocks
    ((3, 37, 1), False),         # general over several key blocks
])
def test_matches_reference(t, shortcuts):
    check_against_reference(t, shortcuts, b=3 if max(t) < 20 else 2, backend="triton", device=DEVICE)


@pytest.mark.parametrize("shortcuts", [False, "absorb"])
def test_length_edges(shortcuts):
    # Every length at its edges: 0 (fully masked), 1, T-1, T in every modality.
    t = (5, 4, 3)
    lens = [torch.tensor([0, 1, ti - 1, ti]) for ti in t]
    check_against_reference(t, shortcuts, b=4, lengths=lens, backend="triton", device=DEVICE)


@pytest.mark.parametrize("d,h", [(64, 2), (24, 3), (256, 1)])
def test_head_sizes(d, h):
    # head sizes 32 (absorbed: 64, two column chunks in the interpreter), 8, and 256
    # (eight chunks); general and absorbed pathways in one launch.
    modes = [GENERAL, ABSORBED, ABSORBED, GENERAL, GENERAL, ABSORBED]
    t, b = ((3, 2, 4), 2) if d < 256 else ((2, 3, 1), 1)
    check_against_reference(t, modes, d=d, h=h, b=b, tol=5e-5, backend="triton", device=DEVICE)


@pytest.mark.parametrize("t,shortcuts,p", [((3, 4, 2), False, 0.3), ((3, 1, 1), True, 0.3),
                                           ((2, 5, 3), "absorb", 0.6)])  # p > 0.5: threshold >= 2^31
def test_dropout_identical_to_cpu_backend(t, shortcuts, p):
    # Same rng -> the same Philox masks as the C++ kernels.
    prm = make_params(16, 2, attn_dropout=p)
    xs, lens = inputs(t, b=3)
    modes = all_modes(t, shortcuts)
    gs = [torch.randn(3, ti, 16) for ti in t]
    results = {}
    rng = torch.tensor([1234567890123, 5])
    for backend, device in (("cpu", "cpu"), ("triton", DEVICE)):
        x_d, lens_d, prm_d = on_device(xs, lens, prm, device)
        results[backend] = run_block(x_d, lens_d, prm_d, backend, modes, [g.to(device) for g in gs],
                                     dropout_p=p - 0.05, training=True, rng=rng)
    (out_c, g_c), (out_t, g_t) = results["cpu"], results["triton"]
    for o, r in zip(out_t, out_c):
        assert rel_err(o.detach().cpu(), r) < 2e-5
    for i, (a, b) in enumerate(zip(g_t, g_c)):
        assert rel_err(a.cpu(), b) < 2e-5, f"gradient {i}: rel. err {rel_err(a.cpu(), b):.2e}"
    # and dropout did act: eval mode gives different outputs
    x_d, lens_d, prm_d = on_device(xs, lens, prm)
    ev = cross_modal_block(*x_d, *lens_d, params=prm_d, backend="triton", shortcuts=modes)
    assert not torch.allclose(ev[0], out_t[0])


def test_results_are_deterministic():
    prm = make_params(16, 2, attn_dropout=0.2)
    xs, lens, prm = on_device(*inputs((3, 4, 2), b=2), prm)
    modes = [GENERAL, ABSORBED, ABSORBED, GENERAL, ABSORBED, GENERAL]
    gs = [torch.randn_like(x) for x in xs]
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(run_block(xs, lens, prm, "triton", modes, gs, dropout_p=0.1, training=True))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_float16_within_twice_eager_error():
    t, d = (6, 5, 1), 32
    prm = make_params(d, 2)
    xs, lens = inputs(t, b=2, d=d)
    modes = [GENERAL, KEY_LEN_1, ABSORBED, KEY_LEN_1, GENERAL, ABSORBED]
    check_within_twice_eager(xs, lens, prm, modes, torch.float16, "triton", DEVICE)


def test_saved_layout_matches_cpu_op():
    t, modes = (3, 1, 4), [KEY_LEN_1, ABSORBED, ABSORBED, ABSORBED, GENERAL, KEY_LEN_1]
    args = op_args(t, modes, 0.2, 0.1)
    cpu = torch.ops.maven_fast.cross_modal_block(*args)
    tri = _triton_op()(*args_on_device(args))
    names = saved_names(modes, True, True)
    assert len(cpu[3]) == len(tri[3]) == len(names)
    for n, a, b in zip(names, cpu[3], [v.cpu() for v in tri[3]]):
        assert a.shape == b.shape and a.dtype == b.dtype, n
        if not n.startswith("lse"):  # lse = +inf where an item has no keys
            assert rel_err(b, a) < 1e-5, n
        else:
            assert torch.equal(torch.isinf(a), torch.isinf(b)) and rel_err(b[a.isfinite()], a[a.isfinite()]) < 1e-5


def test_padded_keys_are_never_read():
    t = (6, 5, 4)
    xs, lens, prm = on_device(*inputs(t), make_params())
    xs = [x.detach() for x in xs]
    modes = [GENERAL, ABSORBED, GENERAL, ABSORBED, ABSORBED, GENERAL]
    with torch.no_grad():
        out = cross_modal_block(*xs, *lens, params=prm, backend="triton", shortcuts=modes)
    mask = torch.arange(t[1], device=DEVICE)[None, :] >= lens[1][:, None]
    x_a2 = torch.where(mask[..., None], torch.full_like(xs[1], float("nan")), xs[1])
    with torch.no_grad():
        out2 = cross_modal_block(xs[0], x_a2, xs[2], *lens, params=prm, backend="triton", shortcuts=modes)
    assert torch.equal(out[0], out2[0]) and torch.equal(out[2], out2[2])


# Items end inside a key block (cross_modal_cases.partial_length): 36 of 37 audio
# keys end inside the third 16-key block of the interpreter (and inside any GPU
# block size); v2a general and t2a absorbed over them, a2v absorbed over 37 query
# rows, v2t and a2t key length 1 (item 1 has no text), t2v general. Dropout off
# (p = 0 is where a read of a padded value hides behind a zero probability; the
# interpreter's Philox would triple the time).
def test_padded_steps_are_never_read_and_get_zero_gradient():
    modes = [GENERAL, KEY_LEN_1, ABSORBED, KEY_LEN_1, GENERAL, ABSORBED]
    check_padding_never_read(_triton_op(), torch.ops.maven_fast.cross_modal_block_triton_backward, (2, 37, 1),
                             modes, b=2, device=DEVICE)


def test_opcheck():
    args = op_args((3, 1, 4), [KEY_LEN_1, ABSORBED, GENERAL, ABSORBED, GENERAL, KEY_LEN_1], 0.2, 0.2)
    torch.library.opcheck(_triton_op(), args_on_device(args), test_utils=("test_schema", "test_autograd_registration",
                                                                            "test_faketensor"))


def test_bad_inputs_raise_clear_errors():
    xs, lens, prm = on_device(*inputs((4, 3, 2)), make_params())
    if DEVICE == "cpu":  # on a GPU a bad length is a device-side error (tests/test_gpu_graph_safety.py)
        with pytest.raises(RuntimeError, match=r"cross_modal_block_triton: `len_a`.*\[0, T\] = \[0, 3\]"):
            cross_modal_block(xs[0], xs[1], xs[2], lens[0], torch.tensor([3, 4, 0]), lens[2], params=prm,
                              backend="triton")
    with pytest.raises(RuntimeError, match=r"key length 1"):
        cross_modal_block(*xs, *lens, params=prm, backend="triton", shortcuts=[KEY_LEN_1] * 6)
    args = list(args_on_device(op_args((3, 4, 2), [GENERAL] * 6, 0.2, 0.0)))
    args[-1] = torch.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"`rng` must be an int64 tensor \[2\]"):
        _triton_op()(*args)


# --------------------------------------------------------------------------- GPU
GPU_SHAPES = [
    ((17, 33, 1), True),      # key length 1 + absorption
    ((64, 100, 32), False),   # paper shapes, general
    ((64, 100, 32), True),    # paper shapes, planned
    ((130, 257, 65), "absorb"),
    ((130, 257, 65), False),  # long general pathways: the long key/query tile configs
    ((256, 400, 64), False),  # SPEC 6's long paper case, general
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("t,shortcuts", GPU_SHAPES)
@pytest.mark.parametrize("d,h", [(512, 2), (256, 4)])
def test_gpu_within_twice_eager_error(dtype, t, shortcuts, d, h):
    # SPEC 5 with the per-dtype floor (cross_modal_cases.FLOOR): 1e-5 in fp32, so a silent
    # switch of the fp32 dots to TF32 (~1e-3) fails.
    prm = make_params(d, h)
    xs, lens = inputs(t, b=4, d=d)
    check_within_twice_eager(xs, lens, prm, all_modes(t, shortcuts), dtype, "triton", "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("t,shortcuts", [((40, 70, 1), True), ((40, 70, 33), False), ((40, 70, 33), "absorb")])
def test_gpu_bitwise_deterministic(dtype, t, shortcuts):
    # 512 items: the combine backward's ticket reduction over 3 x 512 programs, far more than SMs
    check_bitwise_deterministic("triton", t, shortcuts, b=512, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("t,shortcuts", [((9, 1, 1), True), ((20, 70, 5), False), ((3, 70, 9), "absorb")])
def test_gpu_dropout_identical_to_cpu_backend(t, shortcuts):
    prm = make_params(64, 2, attn_dropout=0.3)
    xs, lens = inputs(t, b=3, d=64)
    modes = all_modes(t, shortcuts)
    gs = [torch.randn(3, ti, 64) for ti in t]
    torch.manual_seed(99)
    out_c, g_c = run_block(xs, lens, prm, "cpu", modes, gs, dropout_p=0.25, training=True)
    xs_g = [x.detach().cuda().requires_grad_() for x in xs]
    prm_g = with_params(prm, [p.detach().cuda().requires_grad_() for p in param_list(prm)])
    torch.manual_seed(99)
    out_g, g_g = run_block(xs_g, [length.cuda() for length in lens], prm_g, "triton", modes,
                           [g.cuda() for g in gs], dropout_p=0.25, training=True)
    for a, b in zip(out_g, out_c):
        assert rel_err(a.cpu(), b) < 1e-4
    for a, b in zip(g_g, g_c):
        assert rel_err(a.cpu(), b) < 1e-4


@pytest.mark.gpu
def test_gpu_opcheck():
    *args, rng = op_args((3, 1, 4), [KEY_LEN_1, ABSORBED, GENERAL, ABSORBED, GENERAL, KEY_LEN_1], 0.2, 0.2)
    to_gpu = lambda a: (a.cuda() if isinstance(a, torch.Tensor)  # noqa: E731
                        else [t.cuda() for t in a] if isinstance(a, list) and isinstance(a[0], torch.Tensor) else a)
    # the rng stays on the CPU, as cross_modal_block passes it
    torch.library.opcheck(_triton_op(), (*map(to_gpu, args), rng))


@pytest.mark.gpu
def test_gpu_torch_compile_fullgraph():
    torch._dynamo.reset()
    block = CrossModalBlock(64, 2, attn_dropout=0.0, dropout=0.0, backend="triton").cuda()
    xs, lens = inputs((12, 9, 1), b=2, d=64)
    xs = [x.detach().cuda().requires_grad_() for x in xs]
    lens = [length.cuda() for length in lens]
    out_c = torch.compile(block, fullgraph=True)(*xs, *lens)
    out_e = block(*xs, *lens)
    for a, b in zip(out_c, out_e):
        assert rel_err(a, b) < 1e-5
    wrt = xs + list(block.parameters())
    g_c = torch.autograd.grad(out_c, wrt, [torch.ones_like(o) for o in out_c])
    g_e = torch.autograd.grad(out_e, wrt, [torch.ones_like(o) for o in out_e])
    for a, b in zip(g_c, g_e):
        assert rel_err(a, b) < 1e-4
