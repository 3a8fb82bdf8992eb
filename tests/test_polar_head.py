"""The fused polar head against its eager reference, on every backend that runs here."""
from __future__ import annotations

import math

import pytest
import torch

from maven_fast.backends import BackendUnavailable
from maven_fast.nn import PolarHead
from maven_fast.ops import polar_head, polar_head_reference
from polar_head_cases import SIZES, assert_matches, make_inputs, reference, run

CPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The Triton interpreter gets bf16 wrong; bf16 Triton is covered by the GPU tests.
TRITON_CPU_DTYPES = (torch.float32, torch.float16)
# Where the Triton tests below run: CPU tensors in the interpreter without a GPU
# (conftest.py sets TRITON_INTERPRET=1), the compiled kernels on CUDA tensors with one.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def fused(backend):
    return lambda x, w, b, t, m, bounded: polar_head(x, w, b, t, m, bounded=bounded, backend=backend)


def check_backend(backend, n, dtype, bounded, with_loss, mask_kind, device="cpu"):
    x, w, b, t, m, up = make_inputs(n, dtype=dtype, with_loss=with_loss, mask_kind=mask_kind, device=device)
    got = run(fused(backend), x, w, b, t, m, up, bounded)
    same = run(reference, x, w, b, t, m, up, bounded)
    exact = run(reference, x.double(), w.double(), b.double(), t, m, up, bounded)
    assert_matches(got[0], same[0], exact[0], dtype, "values")
    assert_matches(got[1], same[1], exact[1], dtype, "grads")
    for g in got[1]:
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", CPU_DTYPES)
@pytest.mark.parametrize("bounded", [True, False])
def test_cpu_matches_reference(n, dtype, bounded):
    check_backend("cpu", n, dtype, bounded, with_loss=True, mask_kind="random")


@pytest.mark.parametrize("mask_kind", ["all_valid", "none_valid"])
@pytest.mark.parametrize("with_loss", [True, False])
def test_cpu_masks_and_no_loss(mask_kind, with_loss):
    check_backend("cpu", 33, torch.float32, True, with_loss=with_loss, mask_kind=mask_kind)


@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("dtype", TRITON_CPU_DTYPES)
def test_triton_interpreter_matches_reference(n, dtype):
    check_backend("triton", n, dtype, bounded=True, with_loss=True, mask_kind="random", device=TRITON_DEVICE)


def test_triton_interpreter_large_unbounded_no_loss():
    check_backend("triton", 4097, torch.float32, bounded=False, with_loss=False, mask_kind="random",
                  device=TRITON_DEVICE)


@pytest.mark.parametrize("mask_kind", ["all_valid", "none_valid"])
def test_triton_interpreter_masks(mask_kind):
    check_backend("triton", 9, torch.float32, True, with_loss=True, mask_kind=mask_kind, device=TRITON_DEVICE)


def test_no_valid_row_gives_zero_loss_and_finite_grads():
    x, w, b, t, _, up = make_inputs(5)
    mask = torch.zeros(5, dtype=torch.bool)
    for backend in ("eager", "cpu", "triton"):
        dev = TRITON_DEVICE if backend == "triton" else "cpu"
        xx = x.clone().to(dev).requires_grad_()
        out = polar_head(xx, w.to(dev), b.to(dev), t.to(dev), mask.to(dev), backend=backend)
        assert out.loss.item() == 0.0 and out.n_valid.item() == 0.0
        out.loss.backward()
        assert torch.isfinite(xx.grad).all() and xx.grad.abs().max() == 0


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("with_loss", [True, False])
def test_gradcheck_float64(bounded, with_loss):
    x, w, b, t, m, _ = make_inputs(6, d=9, dtype=torch.float64, with_loss=with_loss)
    t = None if t is None else t.double()
    x, w, b = (v.requires_grad_() for v in (x, w, b))

    def f(x, w, b):
        out = polar_head(x, w, b, t, m, bounded=bounded, backend="cpu")
        return (out.valence_arousal, out.theta_intensity) + ((out.loss,) if with_loss else ())

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_gradcheck_target():
    x, w, b, t, m, _ = make_inputs(5, d=4, dtype=torch.float64)
    t = t.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: polar_head(x, w, b, t, m, backend="cpu").loss, (t,))


def test_opcheck():
    x, w, b, t, m, _ = make_inputs(11, d=32)
    x, w, b = (v.requires_grad_() for v in (x, w, b))
    torch.library.opcheck(torch.ops.maven_fast.polar_head.default, (x, w, b, t, m, True))
    torch.library.opcheck(torch.ops.maven_fast.polar_head.default, (x, w, b, None, None, False))


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    head = PolarHead(64, backend="cpu")
    x = torch.randn(3, 10, 64)
    target = torch.rand(3, 10, 2)
    mask = torch.rand(3, 10) > 0.2
    compiled = torch.compile(head, fullgraph=True)
    got = compiled(x, target, mask)
    head.backend = "eager"
    ref = head(x, target, mask)
    torch.testing.assert_close(got.valence_arousal, ref.valence_arousal, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-5, atol=1e-6)


def test_module_state_dict_shared_between_backends():
    eager = PolarHead(256, bounded=True, backend="eager")
    fused_head = PolarHead(256, bounded=True, backend="cpu")
    fused_head.load_state_dict(eager.state_dict())
    assert list(eager.state_dict()) == ["weight", "bias"]
    x = torch.randn(4, 5, 256)
    torch.testing.assert_close(fused_head(x).valence_arousal, eager(x).valence_arousal, rtol=1e-5, atol=1e-6)
    eager.backend = "cpu"  # switching backends is an assignment
    torch.testing.assert_close(eager(x).theta_intensity, fused_head(x).theta_intensity)


def test_module_autocast_bf16_cpu():
    head = PolarHead(256, backend="cpu")
    x = torch.randn(6, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16())
    assert out.valence_arousal.dtype == torch.bfloat16
    ref = head.to(torch.float64)(x.double())
    assert (out.valence_arousal.double() - ref.valence_arousal).abs().max() < 0.05


def check_module_autocast_fp32_inputs(backend, device="cpu", dtype=torch.bfloat16):
    """fp32 activations and parameters under autocast: the head runs in the autocast dtype,
    as nn.Linear (and the eager backend) does, and its values and the gradients of x,
    weight and bias are within SPEC 5 (2x eager under the same autocast + one rounding)."""
    x, w, b, t, m, up = make_inputs(300, dtype=torch.float32, device=device)

    def run(backend_, dtype_, autocast):
        head = PolarHead(256, backend=backend_).to(device=device, dtype=dtype_)
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.copy_(b)
        xx = x.detach().to(dtype_).requires_grad_()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=autocast):
            out = head(xx, t, m)
        total = (out.valence_arousal.double() * up[0].double()).sum() \
            + (out.theta_intensity.double() * up[1].double()).sum() + out.loss.double() * up[2].double()
        grads = torch.autograd.grad(total, (xx, head.weight, head.bias))
        return [out.valence_arousal, out.theta_intensity, out.loss], list(grads)

    got, eager, exact = run(backend, torch.float32, True), run("eager", torch.float32, True), \
        run("eager", torch.float64, False)
    assert got[0][0].dtype == eager[0][0].dtype == dtype, (got[0][0].dtype, eager[0][0].dtype)
    assert [g.dtype for g in got[1]] == [torch.float32] * 3
    for what, kind in (("values", 0), ("grads", 1)):
        for i, (f, e, r) in enumerate(zip(got[kind], eager[kind], exact[kind])):
            err_f, err_e = (f.double() - r).abs().max().item(), (e.double() - r).abs().max().item()
            tol = 2 * err_e + 2.0**-8 * max(1.0, r.abs().max().item())
            assert err_f <= tol, f"{what}[{i}]: error {err_f:.3g} vs fp64 exceeds {tol:.3g} (eager {err_e:.3g})"


def test_module_autocast_bf16_cpu_with_fp32_inputs():
    check_module_autocast_fp32_inputs("cpu")


def test_bounded_outputs_are_in_range():
    x = torch.randn(500, 256) * 10
    w = torch.randn(2, 256)
    b = torch.zeros(2)
    out = polar_head(x, w, b, backend="cpu")
    assert out.theta_intensity[:, 0].abs().max() <= math.pi + 1e-6
    assert (out.theta_intensity[:, 1] >= 0).all() and (out.theta_intensity[:, 1] <= math.sqrt(2) + 1e-6).all()
    assert out.valence_arousal.norm(dim=1).max() <= math.sqrt(2) + 1e-5


def test_strided_and_noncontiguous_inputs_are_handled():
    wide = torch.randn(50, 300)
    x = wide[:, 10:266]  # row-strided view, dense features: used in place
    w = torch.randn(2, 256) / 16
    b = torch.randn(2)
    ref = polar_head_reference(x, w, b)
    torch.testing.assert_close(polar_head(x, w, b, backend="cpu").valence_arousal, ref.valence_arousal)
    xt = torch.randn(256, 50).t()  # column-major: copied once
    torch.testing.assert_close(
        polar_head(xt, w, b, backend="cpu").valence_arousal, polar_head_reference(xt, w, b).valence_arousal
    )
    dev = TRITON_DEVICE
    torch.testing.assert_close(
        polar_head(x.to(dev), w.t().contiguous().t().to(dev), b.to(dev), backend="triton").valence_arousal.cpu(),
        ref.valence_arousal
    )


def test_deterministic_across_thread_counts():
    x, w, b, t, m, up = make_inputs(4097)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(run(fused("cpu"), x, w, b, t, m, up, True))
    finally:
        torch.set_num_threads(before)
    for a, c in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        assert torch.equal(a, c)


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(x=torch.randn(2, 3, 256)), "`x` must be [N, D]"),
        (dict(w=torch.randn(3, 256)), "`weight` must have shape [2, D]"),
        (dict(w=torch.randn(2, 255)), "`weight` must have shape [2, D]"),
        (dict(b=torch.randn(3)), "`bias` must have shape [2]"),
        (dict(w=torch.randn(2, 256, dtype=torch.float64)), "`weight` has dtype"),
        (dict(x=torch.randint(0, 3, (4, 256))), "`x` must be float32, float64, float16 or bfloat16"),
        (dict(t=torch.randn(5, 2)), "`target` must have shape [N, 2]"),
        (dict(t=torch.randn(4, 2), m=torch.ones(4)), "`mask` must be a bool tensor"),
        (dict(t=torch.randn(4, 2), m=torch.ones(3, dtype=torch.bool)), "`mask` must have shape [N]"),
    ],
)
def test_bad_inputs_raise_clear_errors(args, message):
    x = args.get("x", torch.randn(4, 256))
    w = args.get("w", torch.randn(2, 256))
    b = args.get("b", torch.randn(2))
    with pytest.raises(RuntimeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        torch.ops.maven_fast.polar_head(x, w, b, args.get("t"), args.get("m"), True)


def test_mask_without_target_is_rejected():
    with pytest.raises(ValueError, match="mask"):
        polar_head(torch.randn(3, 8), torch.randn(2, 8), torch.randn(2), mask=torch.ones(3, dtype=torch.bool))


def test_unavailable_backends_say_why():
    x, w, b = torch.randn(3, 8), torch.randn(2, 8), torch.randn(2)
    with pytest.raises(BackendUnavailable, match="runs CUDA tensors"):
        polar_head(x, w, b, backend="cuda")
    with pytest.raises(BackendUnavailable, match="supports dtypes"):
        polar_head(x.double(), w.double(), b.double(), backend="triton")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        polar_head(x, w, b, backend="fast")


def test_empty_batch():
    x = torch.randn(0, 16, requires_grad=True)
    w, b = torch.randn(2, 16, requires_grad=True), torch.randn(2, requires_grad=True)
    out = polar_head(x, w, b, torch.zeros(0, 2), backend="cpu")
    assert out.valence_arousal.shape == (0, 2) and out.loss.item() == 0.0
    out.loss.backward()
    assert w.grad.abs().sum() == 0


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("bounded", [True, False])
def test_gpu_matches_reference(backend, dtype, n, bounded):
    check_backend(backend, n, dtype, bounded, with_loss=True, mask_kind="random", device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_bitwise_deterministic(backend, dtype):
    """Run to run, bitwise: values, loss, and the x, weight and bias gradients, with far more
    row tiles than programs (the CUDA block partials and the Triton ticket reduction over
    up to 4 programs per SM both sum in a fixed order)."""
    n = 1 << 18
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert n // 64 >= 8 * 4 * sms  # tiles of <= 64 rows: >= 8x the programs
    x, w, b, t, m, up = make_inputs(n, dtype=dtype, device="cuda")
    first = run(fused(backend), x, w, b, t, m, up, True)
    for _ in range(2):
        again = run(fused(backend), x, w, b, t, m, up, True)
        for i, (a, c) in enumerate(zip(first[0] + first[1], again[0] + again[1])):
            assert torch.equal(a, c), f"{backend} {dtype}: tensor {i} differs between runs"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("mask_kind", ["all_valid", "none_valid"])
def test_gpu_masks(backend, mask_kind):
    check_backend(backend, 513, torch.float32, True, with_loss=True, mask_kind=mask_kind, device="cuda")


@pytest.mark.gpu
def test_gpu_gradcheck_and_opcheck():
    x, w, b, t, m, _ = make_inputs(6, d=9, dtype=torch.float64, device="cuda")
    x, w, b = (v.requires_grad_() for v in (x, w, b))
    t = t.double()
    assert torch.autograd.gradcheck(
        lambda x, w, b: polar_head(x, w, b, t, m, backend="cuda").loss, (x, w, b)
    )
    torch.library.opcheck(torch.ops.maven_fast.polar_head.default, (x, w, b, t, m, True))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_module_autocast_with_fp32_inputs(backend, dtype):
    check_module_autocast_fp32_inputs(backend, "cuda", dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_torch_compile(backend):
    torch._dynamo.reset()
    head = PolarHead(256, backend=backend).cuda()
    x = torch.randn(4, 100, 256, device="cuda")
    got = torch.compile(head, fullgraph=True)(x)
    head.backend = "eager"
    torch.testing.assert_close(got.valence_arousal, head(x).valence_arousal, rtol=1e-5, atol=1e-5)
