"""``wrap_triton`` for every torch the package supports (2.11 - 2.14).

Without a GPU, TRITON_INTERPRET=1 makes ``triton.jit`` return a
``triton.runtime.interpreter.InterpretedFunction`` (Triton 3.6 and 3.8 alike),
which is not a ``JITFunction``; ``triton.autotune`` then wraps one. The
``torch.library.wrap_triton`` of torch 2.13 and 2.14 hands such kernels back as
they are (an interpreted kernel runs eagerly on CPU tensors; there is nothing to
trace), but torch 2.11's accepts only ``JITFunction`` and ``Autotuner`` objects
and raises "wrap_triton only works on functions annotated with triton.jit or
triton.autotune" (and wraps an autotuned interpreted kernel for tracing, which
cannot work). This function does what the newer torch does, so the launches
behave the same on every supported torch.
"""
from __future__ import annotations

from typing import Any

from torch.library import wrap_triton as _torch_wrap_triton

try:
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # a Triton without the interpreter: nothing is ever interpreted
    InterpretedFunction = None


def is_interpreted(kernel: Any) -> bool:
    """True for an interpreted kernel, also under ``triton.autotune`` / ``triton.heuristics``."""
    if InterpretedFunction is None:
        return False
    seen = set()
    while not isinstance(kernel, InterpretedFunction) and hasattr(kernel, "fn") and id(kernel) not in seen:
        seen.add(id(kernel))  # Autotuner and Heuristics keep the kernel they wrap in .fn
        kernel = kernel.fn
    return isinstance(kernel, InterpretedFunction)


def wrap_triton(kernel: Any) -> Any:
    """``torch.library.wrap_triton(kernel)``; an interpreted kernel is returned unwrapped."""
    return kernel if is_interpreted(kernel) else _torch_wrap_triton(kernel)
