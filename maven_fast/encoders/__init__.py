"""Frozen encoders of MAVEN: video (Swin), audio (HuBERT), text (RoBERTa).

Every encoder is in eval mode, has ``requires_grad=False``, runs batched, and
loads by hub name or local directory (``from_pretrained``), honouring
``HF_HUB_OFFLINE``; ``tiny()`` builds the same architecture with small widths
and random weights (seeded) for tests and the synthetic demo, without network.

>>> encoders = load_encoders("tiny")
>>> encoders.signature()["video"]
{'name': 'tiny-swin', 'dim': 128}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from maven_fast.encoders.audio import DEFAULT_AUDIO_ENCODER, AudioEncoder
from maven_fast.encoders.base import FrozenEncoder
from maven_fast.encoders.hub import EncoderUnavailable, hub_offline
from maven_fast.encoders.text import DEFAULT_TEXT_ENCODER, TextEncoder, byte_level_tokenizer
from maven_fast.encoders.video import DEFAULT_VIDEO_ENCODER, VideoEncoder


@dataclass
class EncoderSet:
    """The three frozen encoders used together."""

    video: VideoEncoder
    audio: AudioEncoder
    text: TextEncoder

    def signature(self) -> dict[str, dict[str, Any]]:
        """Names and output widths, e.g. ``{"video": {"name": ..., "dim": 1024}, ...}``;
        equal to ``MavenConfig.encoders.signature()`` of a model built for them."""
        return {"video": self.video.signature(), "audio": self.audio.signature(), "text": self.text.signature()}

    def encoder_config(self):
        """The :class:`maven_fast.config.EncoderConfig` matching these encoders."""
        from maven_fast.config import EncoderConfig

        return EncoderConfig.from_signature(self.signature())

    def to(self, device: torch.device | str) -> "EncoderSet":
        for encoder in (self.video, self.audio, self.text):
            encoder.to(device)
        return self


def load_encoders(
    kind: Literal["tiny", "base"] = "tiny",
    video: str | None = None,
    audio: str | None = None,
    text: str | None = None,
) -> EncoderSet:
    """``kind="base"``: the paper's encoders by hub name; ``"tiny"``: random tiny ones.

    ``video``/``audio``/``text`` replace one encoder by a hub name or a local
    directory (``load_encoders("base", video="/models/swin")``).
    """
    if kind not in ("tiny", "base"):
        raise ValueError(f"kind: expected 'tiny' or 'base', got {kind!r}")
    defaults = {"video": DEFAULT_VIDEO_ENCODER, "audio": DEFAULT_AUDIO_ENCODER, "text": DEFAULT_TEXT_ENCODER}
    chosen = {"video": video, "audio": audio, "text": text}
    classes = {"video": VideoEncoder, "audio": AudioEncoder, "text": TextEncoder}
    built = {}
    for modality, cls in classes.items():
        if chosen[modality] is not None:
            built[modality] = cls.from_pretrained(chosen[modality])
        elif kind == "tiny":
            built[modality] = cls.tiny()
        else:
            built[modality] = cls.from_pretrained(defaults[modality])
    return EncoderSet(**built)


__all__ = [
    "AudioEncoder", "EncoderSet", "EncoderUnavailable", "FrozenEncoder", "TextEncoder", "VideoEncoder",
    "byte_level_tokenizer", "hub_offline", "load_encoders",
    "DEFAULT_AUDIO_ENCODER", "DEFAULT_TEXT_ENCODER", "DEFAULT_VIDEO_ENCODER",
]
