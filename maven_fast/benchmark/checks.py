"""Output checks every variant must pass before it is timed.

A variant agrees with the reference when, for every compared tensor,
``max|got - want| <= atol + rtol * max|want|`` (a max-norm test: insensitive to
the few tiny entries where elementwise relative error explodes). A variant in
reduced precision (bf16) is held to SPEC 5's rule instead (:func:`check_reduced`):
its error against the fp32 reference is at most ``factor`` times the error of
eager PyTorch in the same precision, plus a floor, as relative root-mean-square
errors pooled over the compared tensors (per element the roundings of two bf16
computations differ at random; the RMS does not), and at most twice that
factor on every single tensor.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from maven_fast.benchmark.results import VariantMismatch

#: SPEC 5's rule for reduced precision, as every suite applies it (:func:`check_reduced`): pooled relative RMS
#: error <= REDUCED_FACTOR x eager's in the same precision + REDUCED_FLOOR; per tensor twice the factor and a
#: floor of :func:`roundoff_units`.
REDUCED_FACTOR, REDUCED_FLOOR = 2.0, 1e-3


def roundoff_units(dtype: torch.dtype, units: int = 4) -> float:
    """``units`` x the unit roundoff of ``dtype`` (bf16: 2^-8, fp16: 2^-11): the per-tensor floor."""
    return units * torch.finfo(dtype).eps / 2


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


def rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


def check_reduced(
    variant: str,
    got: Mapping[str, torch.Tensor | None],
    want: Mapping[str, torch.Tensor | None],
    eager: Mapping[str, torch.Tensor | None],
    factor: float,
    floor: float,
    atol: float = 0.0,
    tensor_factor: float | None = None,
    tensor_floor: float | None = None,
) -> float:
    """Reduced precision, with ``eager`` the eager result in the same precision (``got`` may be
    ``eager`` itself: then only finiteness and presence are checked). With e(x) = rms(x - want) /
    (rms(want) + atol) per tensor:

    * pooled over the tensors: ``sqrt(mean e(got)^2) <= factor * sqrt(mean e(eager)^2) + floor``
      (the SPEC 5 rule; a handful of elements per tensor make single-tensor ratios noisy);
    * each tensor: ``e(got) <= tensor_factor * e(eager) + tensor_floor`` (default 2 x ``factor`` and
      ``floor``), so one corrupted tensor among many cannot hide in the pool. ``tensor_floor`` of a
      few units of the precision's roundoff: a tensor of a few elements (a bias of 2) can have eager
      rounding almost exactly by chance while a correct fused result is a rounding or two off.

    Raises :class:`VariantMismatch`; returns the largest error / bound."""
    tensor_factor = 2 * factor if tensor_factor is None else tensor_factor
    tensor_floor = floor if tensor_floor is None else tensor_floor
    worst, pooled_got, pooled_eager, n = 0.0, 0.0, 0.0, 0
    for name, ref in want.items():
        value, base = got.get(name), eager.get(name)
        if (ref is None) != (value is None):
            raise VariantMismatch(f"{variant}: {name} is {'missing' if value is None else 'unexpected'}")
        if ref is None:
            continue
        if not torch.isfinite(value).all():
            raise VariantMismatch(f"{variant}: {name} has non-finite values; not timing it")
        if value.shape != ref.shape:
            raise VariantMismatch(f"{variant}: {name} shape {tuple(value.shape)} != reference {tuple(ref.shape)}")
        scale = rms(ref) + atol
        e_got = rms(value.double() - ref.double()) / scale
        e_eager = rms(base.double() - ref.double()) / scale
        pooled_got, pooled_eager, n = pooled_got + e_got ** 2, pooled_eager + e_eager ** 2, n + 1
        bound = tensor_factor * e_eager + tensor_floor
        if e_got > bound and got is not eager:
            raise VariantMismatch(
                f"{variant}: {name} relative RMS error {e_got:.3g} vs the fp32 reference > {bound:.3g} = "
                f"{tensor_factor:g} x eager's in the same precision + {tensor_floor:g}; not timing it")
        worst = max(worst, e_got / bound)
    if n and got is not eager:
        e_got, e_eager = (pooled_got / n) ** 0.5, (pooled_eager / n) ** 0.5
        bound = factor * e_eager + floor
        if e_got > bound:
            raise VariantMismatch(
                f"{variant}: relative RMS error pooled over {n} tensors {e_got:.3g} vs the fp32 reference > "
                f"{bound:.3g} = {factor:g} x eager's in the same precision + {floor:g}; not timing it")
        worst = max(worst, e_got / bound)
    return worst
