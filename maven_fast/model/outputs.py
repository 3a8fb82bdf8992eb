"""What a MAVEN forward pass returns."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class MavenOutput:
    """Per-video-frame predictions, and the loss when targets were given.

    ``valence_arousal [B, Tv, 2]`` and ``theta_intensity [B, Tv, 2]`` (theta in
    radians, valence = I cos(theta), arousal = I sin(theta)); values at padded
    frames (``t >= video_lengths[b]``) are computed but meaningless.
    ``loss`` = ``mse_weight * mse + ccc_weight * ccc_loss`` over the valid frames;
    ``n_valid`` is how many frames it averages over.
    """

    valence_arousal: Tensor
    theta_intensity: Tensor
    loss: Tensor | None = None
    mse: Tensor | None = None
    ccc_loss: Tensor | None = None
    n_valid: Tensor | None = None
