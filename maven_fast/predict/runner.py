"""Predict valence and arousal for one video and its transcript.

:func:`predict_video` reads the video's frame rate and frame count from its
container, reads and segments the transcript as ``maven-fast extract`` does
(:func:`maven_fast.data.segment`, contiguous by default), encodes every
segment as extract does (:mod:`maven_fast.predict.features`), streaming frames
and audio by segment, and runs the model per segment: pooled audio/text for
the reference presets, sequences for ``paper``. Segments longer than the
model's window (``max_frames``: the one training used, or the ``paper``
preset's position-embedding length) are cut into windows the way
:class:`~maven_fast.data.FeatureCacheDataset` cuts them.

The result holds a prediction for every video frame (NaN where no segment
covers the frame: after the last utterance without ``tail``, or between
utterances in ``exact`` mode) and one row per segment (the mean over its
frames).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from maven_fast.data import MODES, DataError, Report, Segment, read_transcript, segment
from maven_fast.data.pipeline import DEFAULT_PREFETCH, StageTimes
from maven_fast.predict.features import SegmentFeatures, encode_segments

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class PredictSettings:
    """How videos are segmented and encoded; the defaults are ``maven-fast extract``'s.

    ``feature_dtype``: the storage type of the training cache; features are
    rounded through it so the model sees what it was trained on.
    ``max_frames``: the model's window in frames (0: whole segments), as
    ``data.max_frames`` in training. ``prefetch``: frame chunks / waveforms
    decoded ahead of the encoders in a background thread (0: no thread).
    """

    mode: str = "contiguous"
    tail: bool = False
    max_audio_seconds: float = 30.0
    feature_dtype: str = "float32"
    batch_size: int = 8
    frame_batch: int = 64
    max_frames: int = 0
    prefetch: int = DEFAULT_PREFETCH

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.feature_dtype not in _DTYPES:
            raise ValueError(f"feature_dtype: expected one of {', '.join(_DTYPES)}, got {self.feature_dtype!r}")
        if self.max_audio_seconds <= 0 or self.batch_size < 1 or self.frame_batch < 1 or self.max_frames < 0 \
                or self.prefetch < 0:
            raise ValueError("max_audio_seconds, batch_size and frame_batch must be positive, max_frames and "
                             "prefetch >= 0")


@dataclass
class SegmentPrediction:
    """One transcript segment: its span, text, frames and mean prediction (NaN if it spans no frame)."""

    index: int
    start_s: float
    end_s: float
    text: str
    frame_start: int   # 0-based, half-open
    frame_stop: int
    valence: float
    arousal: float
    kind: str = "utterance"


@dataclass
class VideoPrediction:
    """Per-frame and per-segment predictions for one video.

    ``frames`` are 1-based frame numbers (Aff-Wild2's image numbers), shown at
    ``times_s = (frame - 1) / fps``; ``valence``/``arousal`` are NaN on frames
    no segment covers. ``report`` holds the recoverable problems met (also
    emitted as :class:`~maven_fast.data.DataWarning`).
    """

    video: str
    transcript: str
    fps: Fraction
    frames: np.ndarray
    times_s: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    segments: list[SegmentPrediction]
    report: Report = field(default_factory=Report)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def covered(self) -> np.ndarray:
        """Bool ``[num_frames]``: frames with a prediction."""
        return ~np.isnan(self.valence)


def model_window(model, max_frames: int = 0) -> int:
    """Frames per model call: ``max_frames`` if set, capped for ``paper`` by its position embedding."""
    cfg = model.config
    limit = max_frames if max_frames > 0 else math.inf
    if cfg.variant == "paper":
        limit = min(limit, cfg.temporal.max_video_len)
    return 0 if limit == math.inf else int(limit)


@torch.no_grad()
def run_segment(model, feats: SegmentFeatures, window: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[Tv, 2]`` (valence, arousal) for one segment, one model call per window of ``window`` frames
    (0: the whole segment); audio frames are cut in proportion as the training dataset cuts them."""
    total = feats.video.shape[0]
    step = window or total
    pooled = model.config.pooled_inputs
    n_audio = feats.audio.shape[0]
    outputs = []
    for a in range(0, total, step):
        b = min(total, a + step)
        if pooled:
            audio, text = feats.audio_pooled[None], feats.text_pooled[None]
        else:
            a0 = a * n_audio // total
            a1 = n_audio if b == total else max(a0 + 1, b * n_audio // total)
            audio, text = feats.audio[None, a0:a1], feats.text[None]
        out = model(feats.video[None, a:b].to(device), audio.to(device), text.to(device))
        outputs.append(out.valence_arousal[0].float().cpu())
    return torch.cat(outputs)


def video_segments(video: str | os.PathLike, transcript: str | os.PathLike, settings: PredictSettings,
                   sample_rate: int = 16000, report: Report | None = None):
    """``(VideoInfo, transcript path, segments)``: the video's frame rate and count from its container,
    and the transcript cut into segments as extract cuts it (problems go to ``report``).

    Raises :class:`~maven_fast.data.DataError` when the video cannot be opened, the
    transcript has no usable utterance, or no segment spans a video frame.
    """
    from maven_fast.data.media import probe_video

    report = report if report is not None else Report()
    info = probe_video(video)
    script = read_transcript(transcript)
    report.extend(script.report)
    segments = segment(script.utterances, settings.mode, fps=info.fps, sample_rate=sample_rate,
                       num_frames=info.num_frames, tail=settings.tail, source=script.path, report=report)
    if not any(s.num_frames > 0 for s in segments):
        raise DataError(script.path, f"no segment spans a frame of {video} ({info.num_frames} frames, "
                                     f"{info.duration:.2f}s)",
                        fix="check that the transcript belongs to this video and its times are in seconds")
    return info, script.path, segments


def predict_video(video: str | os.PathLike, transcript: str | os.PathLike, model, encoders,
                  settings: PredictSettings | None = None, *, device: torch.device | str | None = None,
                  progress: bool = False, timings: StageTimes | None = None, **overrides) -> VideoPrediction:
    """Run ``encoders`` and ``model`` (a trained MAVEN, run in eval mode) over one video.

    ``settings`` (default :class:`PredictSettings`), with ``overrides`` of its
    fields applied (``predict_video(v, t, model, encoders, mode="exact")``).
    ``device``: where the model inputs go (default: the model's device).
    ``timings``: a :class:`~maven_fast.data.pipeline.StageTimes` that collects seconds per
    stage (decode, preprocess, wait, video/audio/text encoder, model).

    Raises :class:`~maven_fast.data.DataError` naming the file when the video
    cannot be opened or decoded, or the transcript has no usable utterance
    or no segment that spans a video frame. Problems that can be worked
    around (transcript longer than the video, no audio track, malformed
    transcript lines) are reported in the result's ``report``.
    """
    settings = replace(settings or PredictSettings(), **overrides)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    report = Report()
    info, script_path, segments = video_segments(video, transcript, settings, int(encoders.audio.sample_rate),
                                                 report)
    kept = [s for s in segments if s.num_frames > 0]
    values = np.full((info.num_frames, 2), np.nan, dtype=np.float32)
    window = model_window(model, settings.max_frames)
    bar = _segment_bar(len(kept), Path(video).name, progress)
    was_training = model.training
    model.eval()
    try:
        _fill(values, video, info, kept, model, encoders, settings, window, device, report, bar,
              timings if timings is not None else StageTimes())
    finally:
        model.train(was_training)
        bar.close()
    frame_numbers = np.arange(1, info.num_frames + 1)
    return VideoPrediction(
        video=str(video), transcript=script_path, fps=info.fps, frames=frame_numbers,
        times_s=(frame_numbers - 1) / float(info.fps), valence=values[:, 0], arousal=values[:, 1],
        segments=[_segment_row(s, values) for s in segments], report=report,
    )


def _fill(values: np.ndarray, video, info, kept: list[Segment], model, encoders, settings: PredictSettings,
          window: int, device, report: Report, bar, timings: StageTimes) -> None:
    """Encode the segments (streaming frames and audio) and write the model's outputs into ``values``."""
    from maven_fast.data.audio import AudioReader
    from maven_fast.data.media import VideoReader

    dtype = _DTYPES[settings.feature_dtype]
    with VideoReader(video, report=report, info=info) as frames, \
            AudioReader(video, int(encoders.audio.sample_rate), report=report) as audio:
        for group in encode_segments(frames, audio, kept, encoders, batch_size=settings.batch_size,
                                     frame_batch=settings.frame_batch,
                                     max_audio_seconds=settings.max_audio_seconds, prefetch=settings.prefetch,
                                     timings=timings):
            for feats in group:
                seg = feats.segment
                with timings.stage("model"):
                    values[seg.frame_start: seg.frame_stop] = run_segment(model, feats.as_dtype(dtype), window,
                                                                          device).numpy()
                bar.update(1)


def _segment_row(seg: Segment, values: np.ndarray) -> SegmentPrediction:
    if seg.num_frames > 0:
        valence, arousal = (float(v) for v in values[seg.frame_start: seg.frame_stop].astype(np.float64).mean(0))
    else:
        valence = arousal = float("nan")
    return SegmentPrediction(seg.index, seg.start, seg.end, seg.text, seg.frame_start, seg.frame_stop,
                             valence, arousal, seg.kind)


def _segment_bar(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="segment", leave=False, disable=not enabled, dynamic_ncols=True)
