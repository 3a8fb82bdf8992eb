r"""The first regressor layer of MAVEN on per-frame concatenations whose audio
and text parts are the same for every frame (the reference presets, SPEC 6).

.. math::
    \mathrm{Linear}([v_{bt}, a_b, t_b]) = v_{bt} W_v^\top + (a_b W_a^\top + t_b W_t^\top + b)

with ``W = [W_v | W_a | W_t]`` split along the input features: the audio and
text products are computed once per batch item instead of once per frame, and
the ``[B, Tv, Dv + Da + Dt]`` concatenation is never materialised. Exact up to
rounding; autograd is torch's.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def frame_concat_linear(weight: Tensor, bias: Tensor | None, per_frame: Tensor, *per_item: Tensor) -> Tensor:
    """``Linear(weight, bias)`` of ``cat([per_frame, *per_item broadcast over frames], -1)``.

    ``per_frame [B, T, D0]``; each ``per_item`` is ``[B, Dk]`` or ``[B, 1, Dk]``
    (constant over frames); ``weight [out, D0 + sum Dk]``. Returns ``[B, T, out]``.
    """
    if per_frame.dim() != 3:
        raise ValueError(f"frame_concat_linear: per_frame must be [B, T, D], got shape {tuple(per_frame.shape)}")
    items = []
    for k, x in enumerate(per_item):
        if x.dim() == 3:
            if x.shape[1] != 1:
                raise ValueError(
                    f"frame_concat_linear: per_item[{k}] must be [B, D] or [B, 1, D] (constant over frames), "
                    f"got shape {tuple(x.shape)}"
                )
            x = x[:, 0]
        if x.dim() != 2 or x.shape[0] != per_frame.shape[0]:
            raise ValueError(
                f"frame_concat_linear: per_item[{k}] must be [B, D] with B = {per_frame.shape[0]}, got {tuple(x.shape)}"
            )
        items.append(x)
    widths = [per_frame.shape[-1]] + [x.shape[-1] for x in items]
    if weight.shape[1] != sum(widths):
        raise ValueError(
            f"frame_concat_linear: weight has {weight.shape[1]} input features but the parts have {widths} "
            f"(sum {sum(widths)})"
        )
    w_parts = weight.split(widths, dim=1)
    out = F.linear(per_frame, w_parts[0])
    item_term = bias.expand(per_frame.shape[0], -1) if bias is not None else None
    for x, w in zip(items, w_parts[1:]):
        item_term = F.linear(x, w) if item_term is None else item_term + F.linear(x, w)
    return out if item_term is None else out + item_term[:, None, :]
