r"""The polar head (SPEC 3.2): the final Linear(D -> 2) of the MAVEN regressor,
its bounding activations, the polar -> valence/arousal conversion and,
optionally, the masked MSE loss, in one kernel launch (one more for backward).

.. math::
    r = x W^\top + b,\quad
    \theta = \pi \tanh(r_0),\ I = \sqrt{2}\,\sigma(r_1)\ \ (\text{bounded; unbounded: } \theta = r_0,\ I = r_1)

    v = I\cos\theta,\quad a = I\sin\theta,\qquad
    L = \frac{\sum_n m_n[(v_n - \hat v_n)^2 + (a_n - \hat a_n)^2]}{2\sum_n m_n}\ (0 \text{ if no valid row})

Implementations: ``eager`` (:func:`polar_head_reference`), ``cpu`` and ``cuda``
(``torch.ops.maven_fast.polar_head``, C++), ``triton``
(``torch.ops.maven_fast.polar_head_triton``, :mod:`maven_fast.kernels.polar_head`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from maven_fast._extension import extension
from maven_fast.backends import resolve_backend

SUPPORTED_DTYPES = {
    "cpu": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
}


class PolarHeadOutput(NamedTuple):
    valence_arousal: Tensor  # [N, 2]
    theta_intensity: Tensor  # [N, 2]
    loss: Tensor | None      # [] masked MSE (None when no target was given)
    n_valid: Tensor | None   # [] number of rows the loss averages over


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def polar_head_reference(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    target: Tensor | None = None,
    mask: Tensor | None = None,
    bounded: bool = True,
) -> PolarHeadOutput:
    """Eager PyTorch polar head: the definition every backend is tested against."""
    raw = torch.nn.functional.linear(x, weight, bias)
    if bounded:
        theta = math.pi * torch.tanh(raw[..., 0])
        intensity = math.sqrt(2.0) * torch.sigmoid(raw[..., 1])
    else:
        theta, intensity = raw[..., 0], raw[..., 1]
    va = torch.stack([intensity * torch.cos(theta), intensity * torch.sin(theta)], dim=-1)
    ti = torch.stack([theta, intensity], dim=-1)
    if target is None:
        return PolarHeadOutput(va, ti, None, None)
    acc = acc_dtype(x.dtype)
    valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if mask is None else mask
    n_valid = valid.sum().to(acc)
    err = (va.to(acc) - target.to(acc))[valid]
    loss = (err * err).sum() / (2 * n_valid).clamp_min(1)
    return PolarHeadOutput(va, ti, loss, n_valid)


# --------------------------------------------------------------------------- fake + autograd
def _fake_forward(x, weight, bias, target, mask, bounded):
    n = x.shape[0]
    acc = acc_dtype(x.dtype)
    return (
        x.new_empty((n, 2)),
        x.new_empty((n, 2)),
        x.new_empty((), dtype=acc),
        x.new_empty((), dtype=acc),
    )


def _fake_backward(grad_va, grad_ti, grad_loss, x, weight, bias, target, mask, n_valid, bounded):
    return x.new_empty(x.shape), torch.empty_like(weight), torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    x, weight, bias, target, mask, bounded = inputs
    va, _, _, n_valid = output
    ctx.bounded = bounded
    ctx.save_for_backward(x, weight, bias, target, mask, n_valid, va)
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(n_valid)


def _make_backward(backward_op):
    def backward(ctx, grad_va, grad_ti, grad_loss, _grad_n_valid):
        x, weight, bias, target, mask, n_valid, va = ctx.saved_tensors
        need_x, need_w, need_b, need_target = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_b = grad_target = None
        if need_x or need_w or need_b:
            grad_x, grad_w, grad_b = backward_op(
                grad_va, grad_ti, grad_loss, x, weight, bias, target, mask, n_valid, ctx.bounded
            )
        if need_target and grad_loss is not None:
            # dL/dtarget = -m (va - target) / n_valid  (elementwise, outside the kernel)
            scale = grad_loss / n_valid.clamp_min(1)
            valid = 1.0 if mask is None else mask.unsqueeze(-1).to(va.dtype)
            grad_target = (-(va.to(scale.dtype) - target.to(scale.dtype)) * valid * scale).to(target.dtype)
        return grad_x, grad_w, grad_b, grad_target, None, None

    return backward


def _register_cpp_op() -> None:
    torch.library.register_fake("maven_fast::polar_head")(_fake_forward)
    torch.library.register_fake("maven_fast::polar_head_backward")(_fake_backward)
    torch.library.register_autograd(
        "maven_fast::polar_head",
        _make_backward(torch.ops.maven_fast.polar_head_backward),
        setup_context=_setup_context,
    )


if extension() is not None:
    _register_cpp_op()


def _triton_ops():
    from maven_fast.kernels import polar_head as triton_polar_head  # imports triton lazily

    return triton_polar_head.ensure_registered(_fake_forward, _setup_context, _make_backward)


# --------------------------------------------------------------------------- public entry
def _check_optional_args(x: Tensor, target: Tensor | None, mask: Tensor | None) -> None:
    if mask is not None and target is None:
        raise ValueError("polar_head: `mask` was given without `target`; the mask selects the loss frames")


def polar_head(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    target: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    bounded: bool = True,
    backend: str = "auto",
) -> PolarHeadOutput:
    """Polar head on features ``x [N, D]`` with ``weight [2, D]``, ``bias [2]``.

    ``target [N, 2]`` (valence, arousal) adds the masked MSE loss over rows where
    ``mask [N]`` (bool) is True; ``loss`` and ``n_valid`` are then 0-dim tensors
    in float32 (float64 for float64 inputs), else None. ``backend`` is one of
    ``auto | eager | cpu | cuda | triton`` (see :mod:`maven_fast.backends`).
    """
    _check_optional_args(x, target, mask)
    name = resolve_backend(backend, x.device, x.dtype, SUPPORTED_DTYPES, op="polar_head")
    if name == "eager":
        return polar_head_reference(x, weight, bias, target, mask, bounded)
    if name == "triton":
        forward = _triton_ops()
    else:
        forward = torch.ops.maven_fast.polar_head
    va, ti, loss, n_valid = forward(x, weight, bias, target, mask, bounded)
    if target is None:
        return PolarHeadOutput(va, ti, None, None)
    return PolarHeadOutput(va, ti, loss, n_valid)
