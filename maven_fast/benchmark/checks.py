"""Output checks every variant must pass before it is timed.

A variant agrees with the reference when, for every compared tensor,
``max|got - want| <= atol + rtol * max|want|`` (a max-norm test: insensitive to
the few tiny entries where elementwise relative error explodes).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from maven_fast.benchmark.results import VariantMismatch


def max_error(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """(max |got - want|, max |want|), in float64."""
    got, want = got.detach().double(), want.detach().double()
    if got.shape != want.shape:
        raise VariantMismatch(f"shape {tuple(got.shape)} != reference shape {tuple(want.shape)}")
    return (got - want).abs().max().item(), want.abs().max().item()


def check_close(
    variant: str,
    got: Mapping[str, torch.Tensor | None],
    want: Mapping[str, torch.Tensor | None],
    rtol: float,
    atol: float,
) -> float:
    """Raises :class:`VariantMismatch` naming the first tensor that disagrees; returns
    the largest ``max|got - want| / (atol + rtol max|want|)`` (<= 1 when all agree)."""
    worst = 0.0
    for name, ref in want.items():
        value = got.get(name)
        if (ref is None) != (value is None):
            raise VariantMismatch(f"{variant}: {name} is {'missing' if value is None else 'unexpected'}")
        if ref is None:
            continue
        if not torch.isfinite(value).all():
            raise VariantMismatch(f"{variant}: {name} has non-finite values; not timing it")
        err, scale = max_error(value, ref)
        bound = atol + rtol * scale
        if err > bound:
            raise VariantMismatch(
                f"{variant}: {name} differs from the reference by {err:.3g} (> {bound:.3g} = "
                f"{atol:g} + {rtol:g} * max|ref| {scale:.3g}); not timing it"
            )
        worst = max(worst, err / bound)
    return worst
