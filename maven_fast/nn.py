"""``torch.nn`` modules of maven_fast."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from maven_fast.backends import BACKEND_CHOICES
from maven_fast.ops.polar_head import PolarHeadOutput, polar_head


class PolarHead(nn.Linear):
    """The MAVEN output layer: ``Linear(in_features, 2)`` read as polar (theta, intensity).

    It *is* an ``nn.Linear`` (parameters ``weight [2, in_features]`` and
    ``bias [2]``), so it sits where the original model's last Linear sat and an
    eager and a fused head share one ``state_dict``. ``bounded=True`` gives
    theta = pi*tanh(r0), intensity = sqrt(2)*sigmoid(r1) (the ``paper`` preset);
    ``bounded=False`` reads the raw outputs as theta and intensity, as the
    original code does. The backend can be changed at any time by assigning
    ``head.backend``.

    ``forward(x [..., in_features], target=None [..., 2], mask=None [...])``
    returns a :class:`~maven_fast.ops.PolarHeadOutput` with the leading
    dimensions of ``x`` restored.
    """

    def __init__(
        self,
        in_features: int = 256,
        bounded: bool = True,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_features, 2, bias=True, device=device, dtype=dtype)
        self.bounded = bounded
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKEND_CHOICES:
            raise ValueError(f"PolarHead: unknown backend {value!r}; choose one of {BACKEND_CHOICES}")
        self._backend = value

    def forward(self, x: Tensor, target: Tensor | None = None, mask: Tensor | None = None) -> PolarHeadOutput:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"PolarHead: x must have {self.in_features} features in its last dimension, got shape {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type) and weight.dtype != x.dtype:
            # What autocast does for nn.Linear: run in the activations' dtype.
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        elif weight.dtype != x.dtype:
            raise TypeError(
                f"PolarHead: x has dtype {x.dtype} but the head's parameters are {weight.dtype}; "
                "cast one to the other or run under torch.autocast"
            )
        flat_target = None if target is None else target.reshape(-1, 2)
        flat_mask = None if mask is None else mask.reshape(-1)
        out = polar_head(
            x.reshape(-1, self.in_features), weight, bias, flat_target, flat_mask,
            bounded=self.bounded, backend=self._backend,
        )
        return PolarHeadOutput(
            out.valence_arousal.reshape(*lead, 2),
            out.theta_intensity.reshape(*lead, 2),
            out.loss,
            out.n_valid,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bounded={self.bounded}, backend={self._backend!r}"
