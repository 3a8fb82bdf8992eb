"""A trained model, its encoders and its segmentation settings, ready to predict.

>>> predictor = Predictor.from_checkpoint("runs/maven/checkpoints/best", backend="eager")
>>> result = predictor.predict("talk.mp4", "talk.srt")
>>> result.segments[0].valence

:meth:`Predictor.from_checkpoint` never builds a model from random weights:
without a checkpoint it raises :class:`NoCheckpoint`. The encoders are the
ones recorded in the checkpoint (:func:`~maven_fast.predict.encoders.encoders_for`).
The segmentation and feature settings default to those of the training
feature cache when it can still be read (``data.cache`` of the run's config),
so predict segments and encodes as the training data was; arguments override them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from maven_fast.config import ConfigError
from maven_fast.predict.encoders import EncoderKind, encoders_for
from maven_fast.predict.runner import PredictSettings, VideoPrediction, predict_video

_CACHE_KEYS = ("mode", "tail", "max_audio_seconds")


class NoCheckpoint(ConfigError):
    """Prediction was asked for without a trained checkpoint."""


NO_CHECKPOINT_MESSAGE = (
    "no checkpoint given: predict refuses to run a model with random weights (its valence/arousal "
    "would mean nothing). Train one with `maven-fast train CONFIG.yaml` and pass "
    "--checkpoint runs/NAME/checkpoints/best (or the run directory)"
)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def training_cache_settings(train_cfg) -> tuple[dict[str, Any], str | None]:
    """The extract settings of the run's feature cache (``meta.json``) and its path, if readable."""
    cache = getattr(train_cfg.data, "cache", "") if train_cfg is not None else ""
    meta = Path(cache) / "meta.json" if cache else None
    if meta is None or not meta.is_file():
        return {}, None
    try:
        settings = json.loads(meta.read_text(encoding="utf-8")).get("settings", {})
    except (OSError, json.JSONDecodeError):
        return {}, None
    return (settings if isinstance(settings, dict) else {}), str(meta)


@dataclass
class Predictor:
    """Everything :func:`~maven_fast.predict.runner.predict_video` needs, loaded once for many videos."""

    model: torch.nn.Module
    encoders: Any
    settings: PredictSettings
    device: torch.device
    checkpoint: str = ""
    settings_source: str = "defaults"
    train_config: Any = None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike | None, *, encoders: EncoderKind = "auto",
                        video_encoder: str | None = None, audio_encoder: str | None = None,
                        text_encoder: str | None = None, backend: str = "auto",
                        device: str | torch.device | None = None, compute_dtype: str = "auto",
                        allow_compute_dtype_mismatch: bool = False, allow_random_encoders: bool = False,
                        channels_last: bool = True, compile: bool | str = False,
                        **settings: Any) -> "Predictor":
        """Load a training checkpoint (``runs/NAME/checkpoints/best``, or a run directory for ``last``).

        ``encoders``/``*_encoder``: see :func:`~maven_fast.predict.encoders.encoders_for`.
        ``compute_dtype``: the encoders' precision; ``auto`` (default) is the precision the
        checkpoint's training features were made at (``model.encoders.compute_dtype``; fp32
        for checkpoints that predate it), so the model sees the features it learnt from. Another
        precision is refused (:class:`~maven_fast.encoders.precision.ComputeDtypeMismatch`,
        naming both) unless ``allow_compute_dtype_mismatch``. ``allow_random_encoders``: run a
        checkpoint trained on ``base-random`` encoders (benchmarks only; refused otherwise).
        ``channels_last``/``compile``: see :meth:`~maven_fast.encoders.EncoderSet.configure`.
        ``settings``: :class:`PredictSettings` fields (``mode``, ``tail``, ...); a
        field left out (or None) takes the training cache's value, else extract's default.
        """
        from maven_fast.train.api import load_trained_model
        from maven_fast.train.checkpoint import CheckpointError, verify_checkpoint

        if checkpoint is None or str(checkpoint) == "":
            raise NoCheckpoint(NO_CHECKPOINT_MESSAGE)
        manifest = verify_checkpoint(checkpoint)
        if not isinstance(manifest.get("config"), dict):
            raise CheckpointError(
                f"{manifest['directory']}/manifest.json holds no training config, so the model and its "
                "encoders are unknown; use a checkpoint written by `maven-fast train`"
            )
        device = torch.device(device) if device is not None else default_device()
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device}: no CUDA device is available here; use --device cpu")
        model, train_cfg, manifest = load_trained_model(checkpoint, backend, device)
        source = f"the checkpoint {manifest['directory']}"
        precision, why = predict_compute_dtype(train_cfg.model.encoders.compute_dtype, compute_dtype, source,
                                               allow_compute_dtype_mismatch)
        built = encoders_for(train_cfg.model.encoders, encoders, video=video_encoder, audio=audio_encoder,
                             text=text_encoder, source=source, allow_random=allow_random_encoders).to(device)
        built.configure(precision, channels_last=channels_last, compile=compile)
        built.precision_reason = why
        resolved, origin = resolve_settings(train_cfg, settings)
        return cls(model, built, resolved, device, manifest["directory"], origin, train_cfg)

    def predict(self, video: str | os.PathLike, transcript: str | os.PathLike,
                progress: bool = False, timings=None) -> VideoPrediction:
        """Per-frame and per-segment predictions for one video (see :func:`predict_video`)."""
        return predict_video(video, transcript, self.model, self.encoders, self.settings, device=self.device,
                             progress=progress, timings=timings)

    def describe(self) -> list[str]:
        """Lines for a log: checkpoint, preset, encoders, settings and where they came from."""
        cfg = self.model.config
        names = ", ".join(f"{m} {s['name']}" for m, s in self.encoders.signature().items())
        s = self.settings
        window = f"windows of {s.max_frames} frames" if s.max_frames else "whole segments"
        why = getattr(self.encoders, "precision_reason", "")
        return [f"checkpoint: {self.checkpoint} ({cfg.variant}, backend {self.model.backend}, {self.device})",
                f"encoders: {names}; computing in {self.encoders.compute_dtype}" + (f" ({why})" if why else ""),
                f"segmentation: {s.mode}{' + tail' if s.tail else ''}; audio windows {s.max_audio_seconds:g}s; "
                f"features {s.feature_dtype}; model on {window} ({self.settings_source})"]


def predict_compute_dtype(recorded, requested: str, source: str, allow_mismatch: bool = False) -> tuple[str, str]:
    """``(precision, why)`` for predict: ``auto`` is the checkpoint's; another one is refused
    (naming both) unless ``allow_mismatch``, then warned about."""
    import warnings

    from maven_fast.encoders.precision import COMPUTE_DTYPES, check_compute_dtype, recorded_compute_dtype

    if requested not in COMPUTE_DTYPES:
        raise ConfigError(f"compute_dtype: expected one of {', '.join(COMPUTE_DTYPES)}, got {requested!r}")
    have = recorded_compute_dtype(recorded)
    if requested == "auto":
        return have, f"auto: the precision {source} was trained on"
    if check_compute_dtype(have, requested, have_what=source, want_what=f"--compute-dtype {requested}",
                           override="--allow-compute-dtype-mismatch (allow_compute_dtype_mismatch=True)",
                           allow=allow_mismatch):
        warnings.warn(f"{source} was trained on features computed in {have}; encoding in {requested} "
                      "as asked (--allow-compute-dtype-mismatch): predictions may differ slightly",
                      UserWarning, stacklevel=3)
        return requested, f"given explicitly; the checkpoint's is {have} (mismatch allowed)"
    return requested, "given explicitly"


def resolve_settings(train_cfg, given: dict[str, Any]) -> tuple[PredictSettings, str]:
    """Explicit values, else the training cache's extract settings, else extract's defaults."""
    known = {f.name for f in fields(PredictSettings)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unknown prediction setting(s) {unknown}; known: {sorted(known)}")
    values = {k: v for k, v in given.items() if v is not None}
    cached, meta = training_cache_settings(train_cfg)
    for key in _CACHE_KEYS:
        if key not in values and key in cached:
            values[key] = cached[key]
    if "feature_dtype" not in values and cached.get("dtype") in ("float32", "float16", "bfloat16"):
        values["feature_dtype"] = cached["dtype"]
    if "max_frames" not in values and train_cfg is not None:
        values["max_frames"] = int(train_cfg.data.max_frames)
    if meta is not None:
        origin = f"settings not given follow the training cache {meta}"
    else:
        origin = "the training cache is not readable here: settings not given are extract's defaults"
    return PredictSettings(**values), origin
