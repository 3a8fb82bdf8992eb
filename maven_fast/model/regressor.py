"""The per-frame FFN head: ``fc = Sequential(Linear, ReLU, Dropout, Linear, ReLU, Dropout, last)``.

The indices 0, 3, 6 hold the Linear layers, as in the original
``ThetaIntensityRegressor`` / ``ValenceArousalRegressor`` (state_dict keys
``regressor.fc.{0,3,6}.{weight,bias}``). ``last`` is a
:class:`maven_fast.nn.PolarHead` (an ``nn.Linear(., 2)`` read as theta,
intensity) or, for the original BEiT variant, a plain ``nn.Linear(., 2)``
read as valence, arousal.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from maven_fast.nn import Dropout, Linear, PolarHead


class RegressorOutput(NamedTuple):
    valence_arousal: Tensor      # [..., 2]
    theta_intensity: Tensor      # [..., 2]
    loss: Tensor | None          # masked MSE on (valence, arousal), when targets were given
    n_valid: Tensor | None


def polar_from_valence_arousal(va: Tensor) -> Tensor:
    """``[..., 2]`` (v, a) -> (theta = atan2(a, v), intensity = sqrt(v^2 + a^2))."""
    v, a = va.unbind(-1)
    return torch.stack([torch.atan2(a, v), torch.hypot(v, a)], dim=-1)


class Regressor(nn.Module):
    """FFN head; ``forward(x, target=None, mask=None) -> RegressorOutput``."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: tuple[int, int] = (512, 256),
        dropouts: tuple[float, float] = (0.5, 0.3),
        output: str = "polar",
        bounded: bool = True,
        backend: str = "eager",
    ) -> None:
        super().__init__()
        h1, h2 = hidden_sizes
        last = PolarHead(h2, bounded=bounded, backend=backend) if output == "polar" else Linear(h2, 2, backend=backend)
        self.output = output
        self.fc = nn.Sequential(
            Linear(in_features, h1, backend=backend), nn.ReLU(), Dropout(dropouts[0], backend=backend),
            Linear(h1, h2, backend=backend), nn.ReLU(), Dropout(dropouts[1], backend=backend),
            last,
        )

    @property
    def head(self) -> nn.Linear:
        return self.fc[6]

    def forward(self, x: Tensor | None, target: Tensor | None = None, mask: Tensor | None = None,
                first_layer: Tensor | None = None) -> RegressorOutput:
        """``x [..., in_features]``, or ``first_layer`` = ``fc[0](x)`` already computed
        (the fused backends compute it without materialising ``x``)."""
        features = self.fc[:6](x) if first_layer is None else self.fc[1:6](first_layer)
        if self.output == "polar":
            va, ti, loss, n_valid = self.head(features, target, mask)
            return RegressorOutput(va, ti, loss, n_valid)
        va = self.head(features)
        loss = n_valid = None
        if target is not None:
            from maven_fast.metrics import masked_mse

            loss, n_valid = masked_mse(va, target, mask, return_count=True)
        return RegressorOutput(va, polar_from_valence_arousal(va), loss, n_valid)
