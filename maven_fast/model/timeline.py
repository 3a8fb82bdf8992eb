r"""Bring a modality's sequence onto the video timeline by linear interpolation in time.

Item b has ``L_s`` valid source steps and ``L_v`` valid video frames covering the
same segment; each step is taken to sit at the centre of an equal share of it.
Video frame ``t`` reads the source at

.. math::
    s = \mathrm{clip}\big((t + \tfrac12)\,L_s / L_v - \tfrac12,\ 0,\ L_s - 1\big),\qquad
    i = \lfloor s \rfloor,\quad w = s - i,\quad
    y_t = (1 - w)\,x_i + w\,x_{\min(i + 1,\ L_s - 1)}

(``F.interpolate(mode="linear", align_corners=False)`` on the valid part).
Padded source steps are never read; frames ``t >= L_v`` are filled by the same
formula (finite, meaningless). An item with ``L_s = 0`` gets zeros.
"""
from __future__ import annotations

import torch
from torch import Tensor


def resample_to_timeline(
    x: Tensor, source_lengths: Tensor | None, video_lengths: Tensor | None, video_steps: int
) -> Tensor:
    """``x [B, Ts, C]`` -> ``[B, video_steps, C]``; lengths ``[B]`` (None: the full size)."""
    b, ts, c = x.shape
    device = x.device
    src = (torch.full((b,), ts, device=device) if source_lengths is None else source_lengths).to(torch.float64)
    dst = (torch.full((b,), video_steps, device=device) if video_lengths is None else video_lengths).to(torch.float64)
    t = torch.arange(video_steps, device=device, dtype=torch.float64).unsqueeze(0)
    pos = (t + 0.5) * src.unsqueeze(1) / dst.clamp_min(1).unsqueeze(1) - 0.5
    pos = torch.minimum(pos.clamp_min(0), (src - 1).clamp_min(0).unsqueeze(1))
    lo = pos.floor()
    frac = (pos - lo).to(x.dtype).unsqueeze(-1)
    lo = lo.long()
    hi = torch.minimum(lo + 1, (src.long() - 1).clamp_min(0).unsqueeze(1))
    gather = lambda idx: torch.gather(x, 1, idx.unsqueeze(-1).expand(b, video_steps, c))  # noqa: E731
    out = gather(lo) * (1 - frac) + gather(hi) * frac
    return out * (src > 0).view(b, 1, 1).to(x.dtype)
