r"""``nn.Linear`` through the CPU ops' GEMM dispatch.

.. math::
    y = x W^\top + b,\qquad
    \partial x = \partial y\, W,\quad \partial W = \partial y^\top x,\quad \partial b = \textstyle\sum_{\text{rows}} \partial y

``x [..., in_features]``, ``W [out_features, in_features]``, ``b [out_features]``.
MAVEN's training step is GEMM-bound, and most of its GEMMs are linear layers
(the BEiT layers, the projections, the regressor). On the CPU the ``cpu`` backend
(``torch.ops.maven_fast.linear``, ``csrc/linear/linear_cpu.cpp``) sends the three
products to the GEMM dispatch the fused ops use (``csrc/common/cpu_gemm.h``):
maven_fast's fp32 kernels on AVX2 CPUs, its bf16 kernels on AVX512-BF16 CPUs
without AMX, the skinny kernels for few-row products, ATen elsewhere; the two
backward products run as one group. On GPUs there is no maven_fast GEMM: the
``cuda`` and ``triton`` backends run torch's ``F.linear`` (cuBLAS), as their
fused ops do for every projection, and so does ``auto`` on CUDA tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maven_fast._extension import extension
from maven_fast.backends import runs_cpu_op


def linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The definition every backend is tested against: torch's ``F.linear``."""
    return F.linear(x, weight, bias)


# --------------------------------------------------------------------------- fake + autograd
def _fake_forward(x, weight, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _fake_backward(grad_out, x, weight, output_mask):
    grad_x = x.new_empty(x.shape) if output_mask[0] else x.new_empty((0,))
    grad_w = weight.new_empty(weight.shape) if output_mask[1] else x.new_empty((0,))
    grad_b = x.new_empty((weight.shape[0],)) if output_mask[2] else x.new_empty((0,))
    return grad_x, grad_w, grad_b


def _setup_context(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight)


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad
    mask = [need_x, need_w, need_b and ctx.has_bias]
    if not any(mask):
        return None, None, None
    grad_x, grad_w, grad_b = torch.ops.maven_fast.linear_backward(grad_out, x, weight, mask)
    return (grad_x if mask[0] else None, grad_w if mask[1] else None, grad_b if mask[2] else None)


if extension() is not None:
    torch.library.register_fake("maven_fast::linear")(_fake_forward)
    torch.library.register_fake("maven_fast::linear_backward")(_fake_backward)
    torch.library.register_autograd("maven_fast::linear", _backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public entry
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, backend: str = "auto") -> Tensor:
    """``x W^T + b`` (module docstring). ``backend``: ``auto`` (CPU tensors: ``cpu``; other
    devices: torch's ``F.linear``), ``eager`` (``F.linear``), ``cpu`` (the op), ``cuda`` /
    ``triton`` (``F.linear`` on CUDA tensors). Inputs of one dtype; under autocast cast them
    first (:class:`maven_fast.nn.Linear` does)."""
    if runs_cpu_op(backend, x.device, x.dtype, op="linear"):
        return torch.ops.maven_fast.linear(x, weight, bias)
    return linear_reference(x, weight, bias)
