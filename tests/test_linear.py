"""``maven_fast.ops.linear`` / ``maven_fast.nn.Linear``: nn.Linear through the CPU ops' GEMM
dispatch (csrc/linear/linear_cpu.cpp), against torch's ``F.linear`` in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import maven_fast
from maven_fast import BackendUnavailable, MavenConfig
from maven_fast._extension import extension
from maven_fast.nn import Linear, PolarHead
from maven_fast.ops.linear import linear

pytestmark = pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built")

# (x shape, out_features): rows of several register tiles with remainders (the fp32 kernels
# take them on AVX2 CPUs), one row (the skinny kernels), a 1-D input, 3-D inputs, one output
# feature, and empty batches.
CASES = [((70, 96), 80), ((3, 33, 40), 50), ((1, 64), 30), ((64,), 16), ((130, 24), 1), ((2, 5, 7), 3),
         ((0, 12), 6), ((4, 0, 12), 6)]
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12),
             torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _forward_backward(fn, x, weight, bias, grad):
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    leaves = [x, weight]
    if bias is not None:
        bias = bias.detach().requires_grad_()
        leaves.append(bias)
    y = fn(x, weight, bias)
    grads = torch.autograd.grad(y, leaves, grad)
    return [y] + list(grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("x_shape,out_features", CASES)
def test_linear_matches_f_linear(x_shape, out_features, with_bias, dtype):
    torch.manual_seed(0)
    x = torch.randn(x_shape, dtype=dtype)
    weight = torch.randn(out_features, x_shape[-1], dtype=dtype) / x_shape[-1] ** 0.5
    bias = torch.randn(out_features, dtype=dtype) if with_bias else None
    grad = torch.randn(*x_shape[:-1], out_features, dtype=dtype)
    got = _forward_backward(lambda *a: linear(*a, backend="cpu"), x, weight, bias, grad)
    as64 = lambda t: None if t is None else t.double()  # noqa: E731
    want = _forward_backward(F.linear, as64(x), as64(weight), as64(bias), as64(grad))
    for name, g, w in zip(("y", "dx", "dW", "db"), got, want):
        assert g.dtype == dtype and g.shape == w.shape, (name, g.dtype, g.shape, w.shape)
        torch.testing.assert_close(g.double(), w, **TOLERANCE[dtype], msg=lambda m: f"{name}: {m}")


def test_linear_takes_strided_inputs_and_gradients():
    """x a transposed view, the output gradient a column slice (non-contiguous)."""
    torch.manual_seed(1)
    x = torch.randn(96, 70).t()
    weight = torch.randn(50, 96) / 10
    bias = torch.randn(50)
    grad = torch.randn(70, 100)[:, ::2]
    got = _forward_backward(lambda *a: linear(*a, backend="cpu"), x, weight, bias, grad)
    want = _forward_backward(F.linear, x.double(), weight.double(), bias.double(), grad.double())
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, True, False),
                                   (True, True, False)])
def test_linear_computes_only_the_gradients_asked_for(needs):
    torch.manual_seed(2)
    x = torch.randn(40, 24, requires_grad=needs[0])
    weight = torch.randn(16, 24, requires_grad=needs[1])
    bias = torch.randn(16, requires_grad=needs[2])
    (linear(x, weight, bias, backend="cpu") ** 2).sum().backward()
    x_ref, w_ref, b_ref = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    (F.linear(x_ref, w_ref, b_ref) ** 2).sum().backward()
    for t, ref, asked in zip((x, weight, bias), (x_ref, w_ref, b_ref), needs):
        if asked:
            torch.testing.assert_close(t.grad.double(), ref.grad, rtol=1e-5, atol=1e-4)
        else:
            assert t.grad is None


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True)])
def test_linear_backward_runs_only_the_products_asked_for(needs):
    """float64 (ATen's products, one aten::mm each; no dimension small enough for the skinny kernels)."""
    x = torch.randn(130, 96, dtype=torch.float64, requires_grad=needs[0])
    weight = torch.randn(80, 96, dtype=torch.float64, requires_grad=needs[1])
    bias = torch.randn(80, dtype=torch.float64, requires_grad=needs[2])
    y = linear(x, weight, bias, backend="cpu")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y.sum().backward()
    products = sum(e.name in ("aten::mm", "aten::addmm") for e in prof.events())
    assert products == int(needs[0]) + int(needs[1])


def test_linear_backward_op_returns_empty_tensors_for_gradients_not_asked_for():
    x, weight, grad = torch.randn(5, 4), torch.randn(3, 4), torch.randn(5, 3)
    grad_x, grad_w, grad_b = torch.ops.maven_fast.linear_backward(grad, x, weight, [False, True, False])
    assert grad_x.shape == grad_b.shape == (0,)
    torch.testing.assert_close(grad_w, grad.t() @ x)


def _gemm_ops(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if e.name in ("aten::mm", "aten::addmm", "maven_fast::fp32_gemm")}


@pytest.mark.skipif(not maven_fast.build_info().get("cpu_fp32_gemm"), reason="needs the fp32 GEMM kernels (AVX2)")
def test_linear_runs_its_products_on_the_fp32_kernels():
    """Forward and both backward products go to maven_fast's fp32 kernels, none to ATen (130 rows:
    more than the skinny kernels take)."""
    x = torch.randn(130, 96, requires_grad=True)
    layer = Linear(96, 80, backend="cpu")
    y = layer(x)
    assert _gemm_ops(lambda: layer(x)) == {"maven_fast::fp32_gemm"}
    assert _gemm_ops(lambda: y.backward(torch.ones_like(y))) == {"maven_fast::fp32_gemm"}


def test_linear_opcheck():
    torch.manual_seed(3)
    for x_shape, out_features in [((20, 12), 7), ((2, 3, 12), 5)]:
        x = torch.randn(x_shape, requires_grad=True)
        weight = torch.randn(out_features, x_shape[-1], requires_grad=True)
        for bias in (torch.randn(out_features, requires_grad=True), None):
            torch.library.opcheck(torch.ops.maven_fast.linear.default, (x, weight, bias))


def test_linear_compiles_fullgraph():
    torch._dynamo.reset()
    layer = Linear(24, 10, backend="cpu")
    x = torch.randn(3, 5, 24, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x), rtol=0, atol=0)
    g_c = torch.autograd.grad(compiled(x).sum(), (x, layer.weight))
    g_e = torch.autograd.grad(layer(x).sum(), (x, layer.weight))
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_linear_module_is_an_nn_linear():
    """Same parameters, state_dict and result as nn.Linear; the backend switches the op."""
    torch.manual_seed(4)
    reference = torch.nn.Linear(24, 10)
    layer = Linear(24, 10, backend="cpu")
    layer.load_state_dict(reference.state_dict())
    assert isinstance(layer, torch.nn.Linear) and layer.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(5, 24)
    torch.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-6)
    layer.backend = "eager"
    torch.testing.assert_close(layer(x), reference(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        layer.backend = "gpu"


def test_linear_module_under_autocast_casts_as_nn_linear_does():
    torch.manual_seed(5)
    reference = torch.nn.Linear(32, 12)
    layer = Linear(32, 12, backend="cpu")
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(6, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = layer(x), reference(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    got.float().sum().backward()
    want.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad, rtol=1e-2, atol=1e-2)


def test_linear_errors_name_the_bad_input():
    weight = torch.randn(8, 12)
    with pytest.raises(RuntimeError, match=r"`x` has 10 features .* takes in_features = 12"):
        torch.ops.maven_fast.linear(torch.randn(3, 10), weight, None)
    with pytest.raises(RuntimeError, match=r"`bias` has 7 entries .* out_features = 8"):
        torch.ops.maven_fast.linear(torch.randn(3, 12), weight, torch.randn(7))
    with pytest.raises(RuntimeError, match="`weight` has dtype Double but `x` has dtype Float"):
        torch.ops.maven_fast.linear(torch.randn(3, 12), weight.double(), None)
    with pytest.raises(TypeError, match="Linear: x has dtype torch.float64 but the layer's parameters are"):
        Linear(12, 8, backend="cpu")(torch.randn(3, 12, dtype=torch.float64))
    with pytest.raises(BackendUnavailable, match="backend 'cuda' runs CUDA tensors"):
        linear(torch.randn(3, 12), weight, backend="cuda")


def test_linear_module_off_the_cpu_is_torchs_f_linear():
    """Tensors on another device (meta here; CUDA alike): ``auto`` runs F.linear, ``cpu`` refuses."""
    x = torch.empty(3, 5, 12, device="meta")
    assert Linear(12, 8, device="meta")(x).shape == (3, 5, 8)
    with pytest.raises(BackendUnavailable, match="backend 'cpu' runs CPU tensors, got tensors on meta"):
        Linear(12, 8, backend="cpu", device="meta")(x)


def test_maven_set_backend_reaches_every_linear_layer():
    model = maven_fast.MAVEN(MavenConfig.paper(), backend="cpu")
    attention_outputs = {id(m.out_proj) for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in attention_outputs]
    assert len(layers) > 10 and all(isinstance(m, (Linear, PolarHead)) for m in layers)
    assert {m.backend for m in layers} == {"cpu"}
    model.set_backend("eager")
    assert {m.backend for m in layers} == {"eager"}
