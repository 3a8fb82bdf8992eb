"""The frozen encoders a checkpoint was trained with, rebuilt for prediction.

A training checkpoint records, in its manifest's config, the encoders whose
features the model learnt from (``model.encoders``: names and widths, the
same signature as the feature cache). Predicting with any other encoders
would feed the model features it has never seen, so :func:`encoders_for`
builds exactly those:

* ``tiny-swin`` / ``tiny-hubert`` / ``tiny-roberta`` (with an optional
  ``-seed<N>`` suffix): the tiny random encoders, rebuilt from that seed;
* ``base-random-swin`` / ``base-random-hubert`` / ``base-random-roberta``
  (``-seed<N>``): the real-size architectures with random weights; refused
  (:class:`RandomEncoders`) unless ``allow_random=True`` (``--benchmark-random-encoders``),
  because a model trained on random features predicts nothing meaningful;
* any other name: a hub name or local directory, loaded with
  ``from_pretrained`` (``HF_HUB_OFFLINE`` honoured);
* a replacement path per modality (``video="/models/swin"``) for a local
  copy of the recorded encoder: its width must match, and a different name
  is warned about.

A mismatch raises :class:`EncoderMismatch` naming what the checkpoint expects.
"""
from __future__ import annotations

import re
import warnings
from typing import Literal

from maven_fast.config import ConfigError, EncoderConfig
from maven_fast.encoders import (DEFAULT_AUDIO_ENCODER, DEFAULT_TEXT_ENCODER, DEFAULT_VIDEO_ENCODER,
                                 AudioEncoder, EncoderSet, EncoderUnavailable, TextEncoder, VideoEncoder)

MODALITIES = ("video", "audio", "text")
_CLASSES = {"video": VideoEncoder, "audio": AudioEncoder, "text": TextEncoder}
_TINY_BASE = {"video": "tiny-swin", "audio": "tiny-hubert", "text": "tiny-roberta"}
_RANDOM_BASE = {"video": "base-random-swin", "audio": "base-random-hubert", "text": "base-random-roberta"}
_BASE_NAMES = {"video": DEFAULT_VIDEO_ENCODER, "audio": DEFAULT_AUDIO_ENCODER, "text": DEFAULT_TEXT_ENCODER}
EncoderKind = Literal["auto", "tiny", "base"]


class EncoderMismatch(ConfigError):
    """The encoders asked for are not the ones the checkpoint was trained with."""


class RandomEncoders(ConfigError):
    """The checkpoint names ``base-random`` encoders and random predictions were not asked for."""


def _seed_of(base: str, name: str) -> int | None:
    match = re.fullmatch(re.escape(base) + r"(?:-seed(\d+))?", name)
    if match is None:
        return None
    return int(match.group(1) or 0)


def tiny_seed(modality: str, name: str) -> int | None:
    """The seed of a tiny encoder name (``tiny-swin`` -> 0, ``tiny-swin-seed3`` -> 3), else None."""
    return _seed_of(_TINY_BASE[modality], name)


def random_base_seed(modality: str, name: str) -> int | None:
    """The seed of a ``base-random`` encoder name (``base-random-swin-seed2`` -> 2), else None."""
    return _seed_of(_RANDOM_BASE[modality], name)


def encoders_for(expected: EncoderConfig, kind: EncoderKind = "auto", *, video: str | None = None,
                 audio: str | None = None, text: str | None = None,
                 source: str = "the checkpoint", allow_random: bool = False) -> EncoderSet:
    """Build the encoders ``expected`` names (a checkpoint's ``model.encoders``).

    ``kind``: ``auto`` builds whatever the names say; ``tiny`` and ``base``
    additionally assert that the checkpoint used the tiny / the paper's
    encoders (an :class:`EncoderMismatch` otherwise). ``video``/``audio``/``text``:
    a local directory (or hub name) replacing that encoder. ``source`` names the
    checkpoint in messages. ``allow_random``: build ``base-random`` encoders (benchmarks only).
    """
    if kind not in ("auto", "tiny", "base"):
        raise ValueError(f"kind: expected 'auto', 'tiny' or 'base', got {kind!r}")
    signature = expected.signature()
    replacements = {"video": video, "audio": audio, "text": text}
    built = {}
    for modality in MODALITIES:
        want = signature[modality]
        if replacements[modality] is not None:
            built[modality] = _load_replacement(modality, replacements[modality], want, source)
        else:
            built[modality] = _load_recorded(modality, want, kind, source, allow_random)
        have = built[modality].signature()
        if have["dim"] != want["dim"]:
            raise EncoderMismatch(
                f"{source} was trained on {want['dim']}-d {modality} features from {want['name']!r}, but the "
                f"{modality} encoder {have['name']!r} outputs {have['dim']}-d features; use the encoder the "
                f"checkpoint names (--encoders auto, or --{modality}-encoder PATH to a local copy of it)"
            )
    return EncoderSet(**built)


def _load_recorded(modality: str, want: dict, kind: str, source: str, allow_random: bool = False):
    """The encoder named in the checkpoint (a tiny name, a base-random name, or a hub name / path)."""
    name, cls = want["name"], _CLASSES[modality]
    random_seed = random_base_seed(modality, name)
    if random_seed is not None:
        if not allow_random:
            raise RandomEncoders(
                f"{source} was trained on features of {name!r}, a {modality} encoder with RANDOM weights "
                "(built for benchmarks): its predictions would mean nothing, so predict refuses it. Train on "
                "features of real encoders (--encoders base), or, to time the pipeline only, pass "
                "--benchmark-random-encoders (allow_random_encoders=True)"
            )
        if kind == "tiny":
            raise EncoderMismatch(f"{source} expects the {modality} encoder {name!r}, not a tiny one; "
                                  "use --encoders auto")
        return cls.base_random(seed=random_seed)
    seed = tiny_seed(modality, name)
    if kind == "tiny" and seed is None:
        raise EncoderMismatch(
            f"{source} expects the {modality} encoder {name!r} ({want['dim']}-d), not a tiny one: "
            f"--encoders tiny builds {_TINY_BASE[modality]!r}; use --encoders auto (or "
            f"--{modality}-encoder PATH to a local copy of {name!r})"
        )
    if kind == "base" and name != _BASE_NAMES[modality]:
        raise EncoderMismatch(
            f"{source} expects the {modality} encoder {name!r} ({want['dim']}-d), but --encoders base loads "
            f"{_BASE_NAMES[modality]!r}; use --encoders auto to build the recorded one"
        )
    if seed is not None:
        return cls.tiny(seed=seed)
    try:
        return cls.from_pretrained(name)
    except EncoderUnavailable as exc:
        raise EncoderUnavailable(
            f"{exc}\n{source} was trained with the {modality} encoder {name!r}; with maven-fast predict, "
            f"pass --{modality}-encoder PATH to a local copy of it"
        ) from exc


def _load_replacement(modality: str, path: str, want: dict, source: str):
    """A local copy (or another hub name) standing in for the recorded encoder."""
    encoder = _CLASSES[modality].from_pretrained(path)
    if encoder.name != want["name"]:
        warnings.warn(
            f"using {path!r} as the {modality} encoder; {source} was trained with {want['name']!r}: "
            "make sure they hold the same weights, or the predictions mean nothing",
            UserWarning, stacklevel=3,
        )
    return encoder
