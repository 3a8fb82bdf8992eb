"""The Triton ops on both ends of the supported torch range (2.11 - 2.14; CI runs
the suite on each): their schemas come from annotations (torch < 2.14 ignores
``triton_op(schema=...)``), and ``wrap_triton`` accepts the kernels of Triton's CPU
interpreter (torch 2.11's rejects them)."""
from __future__ import annotations

import pytest
import torch

from maven_fast.backends import backend_problems

tl = pytest.importorskip("triton.language")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(bool(backend_problems("triton", DEVICE)),
                                reason="; ".join(backend_problems("triton", DEVICE)))


def _signature(op):
    schema = op.default._schema
    return [(a.name, str(a.type)) for a in schema.arguments], [str(r.type) for r in schema.returns]


@pytest.mark.parametrize("name,cpp_name", [("cross_modal_block_triton", "cross_modal_block"),
                                           ("cross_modal_block_triton_backward", "cross_modal_block_backward")])
def test_triton_ops_take_the_cpp_ops_arguments(name, cpp_name):
    """The Triton ops share the C++ ops' fake kernels and autograd formula, so they
    must take the same arguments; inference writes SymInt where C++ has int."""
    from maven_fast.ops.cross_modal import _triton_op

    _triton_op()
    args, returns = _signature(getattr(torch.ops.maven_fast, name))
    cpp_args, cpp_returns = _signature(getattr(torch.ops.maven_fast, cpp_name))
    assert [(n, t.replace("SymInt", "int")) for n, t in args] == cpp_args
    assert returns == cpp_returns


def _copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


def test_wrap_triton_passes_interpreted_kernels_through_and_wraps_compiled_ones():
    import triton
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    from maven_fast.kernels._torch_compat import is_interpreted, wrap_triton

    interpreted = InterpretedFunction(_copy)
    autotuned = triton.autotune(configs=[triton.Config({"BLOCK": 8})], key=["n"])(InterpretedFunction(_copy))
    for kernel in (interpreted, autotuned):
        assert is_interpreted(kernel)
        assert wrap_triton(kernel) is kernel
    compiled = JITFunction(_copy)
    assert not is_interpreted(compiled)
    assert type(wrap_triton(compiled)) is type(torch.library.wrap_triton(compiled))
    with pytest.raises(RuntimeError, match="triton.jit"):
        wrap_triton(_copy)


@pytest.mark.skipif(DEVICE != "cpu", reason="runs the interpreter")
def test_interpreted_kernel_runs_through_wrap_triton():
    from triton.runtime.interpreter import InterpretedFunction

    from maven_fast.kernels._torch_compat import wrap_triton

    x = torch.arange(5, dtype=torch.float32)
    y = torch.zeros(5)
    wrap_triton(InterpretedFunction(_copy))[(1,)](x, y, 5, BLOCK=8)
    torch.testing.assert_close(y, x)
