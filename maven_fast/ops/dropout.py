r"""Dropout with a counter-based mask on the CPU.

.. math::
    \mathrm{dropout}(x)_i = x_i \, \frac{[w_i \ge p\,2^{32}]}{1 - p},\qquad
    w_i = \text{word } i \bmod 4 \text{ of Philox-4x32-10}(\text{key} = s,\ \text{counter} = (\lfloor i/4 \rfloor, 0, 0))

The ``cpu`` backend builds the scaled keep mask with ``torch.ops.maven_fast.dropout_mask``
(``csrc/dropout/``: Philox blocks of four elements, eight at a time per AVX2 register,
split over the threads) and multiplies; autograd is torch's (the gradient is the same
mask times the output gradient). The seed ``s`` is one int64 drawn from torch's CPU
generator per call, so ``torch.manual_seed`` makes runs repeat. torch's CPU dropout
draws its mask with ``bernoulli_``, one element at a time on one thread: 8.9 ms for
0.5 M elements on a 2-core AVX2 EPYC, against 1.5 ms for the mask here. The masks
differ from torch's (another generator); eager is ``F.dropout``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maven_fast._extension import extension
from maven_fast.backends import runs_cpu_op

_INT64_MAX = 2**63 - 1


def _fake_mask(like, p, seed):
    return torch.empty_like(like, memory_format=torch.contiguous_format)


if extension() is not None:
    torch.library.register_fake("maven_fast::dropout_mask")(_fake_mask)


def dropout(x: Tensor, p: float, training: bool = True, *, backend: str = "auto") -> Tensor:
    """``F.dropout(x, p, training)`` with the ``cpu`` backend's mask (module docstring). ``backend``:
    ``auto`` (CPU tensors: ``cpu``; other devices: ``F.dropout``), ``eager`` (``F.dropout``), ``cpu``,
    ``cuda`` / ``triton`` (``F.dropout`` on CUDA tensors)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not runs_cpu_op(backend, x.device, x.dtype, op="dropout"):
        return F.dropout(x, p, training)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    seed = torch.randint(_INT64_MAX, (), dtype=torch.int64)
    return x * torch.ops.maven_fast.dropout_mask(x.detach(), p, seed)
