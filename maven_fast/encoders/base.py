"""What every frozen encoder shares: eval mode forever, no gradients, a signature."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class FrozenEncoder(nn.Module):
    """An encoder whose parameters never train: ``requires_grad=False`` and always in eval mode
    (``.train()`` is ignored, so a parent module's ``train()`` cannot switch on its dropout)."""

    modality: str = ""

    def __init__(self, name: str, dim: int) -> None:
        super().__init__()
        self.name = name
        self.dim = dim
        self.compute_dtype = "float32"  # resolved: float32 | bfloat16 | float16 (see configure)
        self.channels_last = False
        self.__dict__["_compiled"] = None  # torch.compile'd self.model (not a registered submodule)

    def configure(self, compute_dtype: str = "float32", *, channels_last: bool = True, sdpa: bool = True,
                  maven_linear: bool = True, compile: bool | str = False) -> "FrozenEncoder":
        """How the encoder runs: precision (``float32``, ``bfloat16``, ``float16``; see
        :mod:`maven_fast.encoders.precision`; resolve ``auto`` first), channels_last memory
        layout where the architecture has convolutions over images, PyTorch's fused SDPA
        attention where the implementation offers it, the model's linear layers on
        maven_fast's CPU GEMM dispatch (``maven_linear``; :meth:`_use_maven_linear`), and
        ``torch.compile`` of the model (``compile=True`` for inductor, or a backend name)."""
        from maven_fast.encoders.precision import RESOLVED

        if compute_dtype not in RESOLVED:
            raise ValueError(f"compute_dtype: expected one of {', '.join(RESOLVED)} here (resolve 'auto' with "
                             f"maven_fast.encoders.precision.resolve_compute_dtype first), got {compute_dtype!r}")
        self.compute_dtype = compute_dtype
        self._set_channels_last(channels_last)
        if sdpa:
            self._use_sdpa()
        self._use_maven_linear(maven_linear)
        if compile:
            backend = "inductor" if compile is True else str(compile)
            self.__dict__["_compiled"] = torch.compile(self.model, backend=backend, dynamic=self._compile_dynamic)
        else:
            self.__dict__["_compiled"] = None
        return self

    _compile_dynamic: bool | None = None

    def _set_channels_last(self, enabled: bool) -> None:
        self.channels_last = False

    def _use_maven_linear(self, enabled: bool) -> None:
        """Every ``nn.Linear`` of the model becomes a :class:`maven_fast.nn.Linear` holding the same
        parameters: on the CPU its products run on maven_fast's GEMM dispatch (Swin-B in fp32 on
        a 2-core AVX2 EPYC: 3.96 -> 4.45 frames/s), elsewhere torch's ``F.linear``.
        ``enabled=False`` (or no compiled extension) runs them as ``nn.Linear`` again."""
        from maven_fast._extension import extension
        from maven_fast.nn import Linear

        backend = "auto" if enabled and extension() is not None else "eager"
        for parent in list(self.model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear:
                    setattr(parent, name, Linear.sharing(child, backend))
                elif isinstance(child, Linear):
                    child.backend = backend

    def maven_linear_enabled(self) -> bool:
        from maven_fast.nn import Linear

        layers = [m for m in self.model.modules() if isinstance(m, Linear)]
        return bool(layers) and all(m.backend != "eager" for m in layers)

    def _use_sdpa(self) -> None:
        """Switch the model's attention to ``F.scaled_dot_product_attention`` (per implementation)."""

    def sdpa_enabled(self) -> bool:
        return False

    def run_model(self, *args, **kwargs):
        """``self.model(...)`` at the configured precision (compiled when asked)."""
        from maven_fast.encoders.precision import autocast_context

        compiled = self.__dict__.get("_compiled")
        model = compiled if compiled is not None else self.model
        with autocast_context(self.device, self.compute_dtype):
            return model(*args, **kwargs)

    def runtime(self) -> dict[str, Any]:
        """The runtime options in effect (for logs and reports)."""
        return {"compute_dtype": self.compute_dtype, "channels_last": self.channels_last,
                "sdpa": self.sdpa_enabled(), "maven_linear": self.maven_linear_enabled(),
                "compiled": self.__dict__.get("_compiled") is not None}

    def freeze(self) -> "FrozenEncoder":
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "FrozenEncoder":
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def signature(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}"


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a random initialisation from ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_name(base: str, seed: int) -> str:
    return base if seed == 0 else f"{base}-seed{seed}"


def chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
