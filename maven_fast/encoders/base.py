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
