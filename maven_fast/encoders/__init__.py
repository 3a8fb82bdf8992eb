"""Frozen encoders of MAVEN: video (Swin), audio (HuBERT), text (RoBERTa).

Every encoder is in eval mode, has ``requires_grad=False``, runs batched, and
loads by hub name or local directory (``from_pretrained``), honouring
``HF_HUB_OFFLINE``; ``tiny()`` builds the same architecture with small widths
and random weights (seeded) for tests and the synthetic demo, without network;
``base_random()`` builds the real-size architectures (Swin-B, HuBERT-base,
RoBERTa-base, configs written in code) with random weights, for benchmarks.
:meth:`EncoderSet.configure` sets the compute precision (``auto``: bf16 where
the hardware is fast at it, see :mod:`maven_fast.encoders.precision`),
channels_last, SDPA attention and ``torch.compile``.

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

    @property
    def compute_dtype(self) -> str:
        """The resolved precision the encoders compute in (``float32`` until :meth:`configure`)."""
        dtypes = {e.compute_dtype for e in (self.video, self.audio, self.text)}
        if len(dtypes) != 1:
            raise ValueError(f"the encoders compute in different precisions {sorted(dtypes)}; "
                             "configure them together with EncoderSet.configure")
        return dtypes.pop()

    def configure(self, compute_dtype: str = "auto", *, channels_last: bool = True, sdpa: bool = True,
                  maven_linear: bool = True, compile: bool | str = False) -> str:
        """Set every encoder's runtime on its current device (move them first); returns why
        the precision was chosen. ``compute_dtype``: ``auto``, ``float32``, ``bfloat16`` or
        ``float16``; see :class:`~maven_fast.encoders.base.FrozenEncoder.configure`."""
        from maven_fast.encoders.precision import resolve_compute_dtype

        resolved, why = resolve_compute_dtype(compute_dtype, self.video.device)
        for encoder in (self.video, self.audio, self.text):
            encoder.configure(resolved, channels_last=channels_last, sdpa=sdpa, maven_linear=maven_linear,
                              compile=compile)
        self.precision_reason = why
        return why

    def runtime(self) -> dict[str, dict[str, Any]]:
        return {"video": self.video.runtime(), "audio": self.audio.runtime(), "text": self.text.runtime()}

    def is_random(self) -> list[str]:
        """Names of the encoders built with random weights at real size (``base-random-*``)."""
        return [e.name for e in (self.video, self.audio, self.text) if e.name.startswith("base-random")]


ENCODER_KINDS = ("tiny", "base", "base-random")


def load_encoders(
    kind: Literal["tiny", "base", "base-random"] = "tiny",
    video: str | None = None,
    audio: str | None = None,
    text: str | None = None,
) -> EncoderSet:
    """``kind="base"``: the paper's encoders by hub name; ``"tiny"``: random tiny ones;
    ``"base-random"``: the paper's architectures at full size with random weights, built
    without the hub (for benchmarks: their features mean nothing).

    ``video``/``audio``/``text`` replace one encoder by a hub name or a local
    directory (``load_encoders("base", video="/models/swin")``).
    """
    if kind not in ENCODER_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(map(repr, ENCODER_KINDS))}, got {kind!r}")
    defaults = {"video": DEFAULT_VIDEO_ENCODER, "audio": DEFAULT_AUDIO_ENCODER, "text": DEFAULT_TEXT_ENCODER}
    chosen = {"video": video, "audio": audio, "text": text}
    classes = {"video": VideoEncoder, "audio": AudioEncoder, "text": TextEncoder}
    built = {}
    for modality, cls in classes.items():
        if chosen[modality] is not None:
            built[modality] = cls.from_pretrained(chosen[modality])
        elif kind == "tiny":
            built[modality] = cls.tiny()
        elif kind == "base-random":
            built[modality] = cls.base_random()
        else:
            built[modality] = cls.from_pretrained(defaults[modality])
    return EncoderSet(**built)


__all__ = [
    "ENCODER_KINDS", "AudioEncoder", "EncoderSet", "EncoderUnavailable", "FrozenEncoder", "TextEncoder", "VideoEncoder",
    "byte_level_tokenizer", "hub_offline", "load_encoders",
    "DEFAULT_AUDIO_ENCODER", "DEFAULT_TEXT_ENCODER", "DEFAULT_VIDEO_ENCODER",
]
