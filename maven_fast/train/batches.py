"""From a collated cache batch (maven_fast.data.collate_segments) to model arguments."""
from __future__ import annotations

import torch

MODEL_KEYS = ("video", "audio", "text", "video_lengths", "audio_lengths", "text_lengths")


def to_model_inputs(batch: dict, device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Returns (model keyword arguments, targets [B, Tv, 2], mask [B, Tv]) on ``device``."""
    inputs = {k: (batch[k].to(device, non_blocking=True) if batch.get(k) is not None else None) for k in MODEL_KEYS}
    return inputs, batch["labels"].to(device), batch["mask"].to(device)


def batch_frames(batch: dict) -> list[tuple[str, torch.Tensor]]:
    """Per item: (video name, 1-based frame numbers of its valid positions)."""
    out = []
    for i, name in enumerate(batch["names"]):
        n = int(batch["video_lengths"][i])
        out.append((name, batch["frames"][i, :n]))
    return out
