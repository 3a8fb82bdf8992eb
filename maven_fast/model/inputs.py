"""Checks of the model's inputs, with errors that name the tensor and the shape it must have."""
from __future__ import annotations

import torch
from torch import Tensor


class MavenInputError(ValueError):
    """An input tensor has the wrong shape, dtype or values; the message names it."""


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_features(name: str, x: Tensor, expected: str, ndim: int, dim: int) -> None:
    """``x`` must be a floating tensor with ``ndim`` dimensions and ``dim`` features last."""
    if not isinstance(x, Tensor):
        raise MavenInputError(f"{name}: expected a tensor of shape {expected}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise MavenInputError(f"{name}: expected shape {expected}, got {_shape(x)} ({x.ndim} dimensions)")
    if not x.is_floating_point():
        raise MavenInputError(f"{name}: expected a floating-point tensor of shape {expected}, got {x.dtype}")
    if x.shape[-1] != dim:
        raise MavenInputError(
            f"{name}: expected shape {expected} with {dim} features in the last dimension, got {_shape(x)}"
        )
    if ndim == 3 and x.shape[1] == 0:
        raise MavenInputError(
            f"{name}: expected shape {expected} with at least one time step, got {_shape(x)} (an empty sequence); "
            "pad it to length >= 1 and pass a length of 0 for items that have none"
        )


def check_batch(batch: int, **tensors: Tensor) -> None:
    for name, t in tensors.items():
        if t.shape[0] != batch:
            raise MavenInputError(
                f"{name}: batch size {t.shape[0]} does not match video's batch size {batch} (shape {_shape(t)})"
            )


def check_lengths(name: str, lengths: Tensor | None, batch: int, max_len: int, device: torch.device) -> Tensor | None:
    """``lengths`` must be an integer tensor ``[batch]`` with values in ``[0, max_len]``."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.shape != (batch,):
        raise MavenInputError(f"{name}: expected shape [B] = [{batch}], got {_shape(lengths)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise MavenInputError(f"{name}: expected an integer tensor of shape [{batch}], got {lengths.dtype}")
    if batch:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0:
            raise MavenInputError(f"{name}: lengths must be >= 0, got {lo}")
        if hi > max_len:
            raise MavenInputError(
                f"{name}: length {hi} is longer than the tensor it describes (its time dimension is {max_len})"
            )
    return lengths.to(device=device, dtype=torch.long)


def check_targets(targets: Tensor | None, mask: Tensor | None, batch: int, frames: int) -> None:
    if targets is not None:
        if not isinstance(targets, Tensor) or targets.shape != (batch, frames, 2):
            got = _shape(targets) if isinstance(targets, Tensor) else type(targets).__name__
            raise MavenInputError(f"targets: expected shape [B, Tv, 2] = [{batch}, {frames}, 2], got {got}")
    if mask is not None:
        if targets is None:
            raise MavenInputError("mask: given without targets; the mask selects the frames the loss uses")
        if not isinstance(mask, Tensor) or mask.shape != (batch, frames) or mask.dtype != torch.bool:
            got = f"{_shape(mask)} {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
            raise MavenInputError(f"mask: expected a bool tensor of shape [B, Tv] = [{batch}, {frames}], got {got}")


def valid_mask(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor | None:
    """``[batch, steps]`` bool, True at positions ``< length``; None when lengths is None."""
    if lengths is None:
        return None
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.unsqueeze(1)
