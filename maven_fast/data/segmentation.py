"""Cut a video's timeline into segments, one per utterance.

Two modes:

``contiguous`` (MAVEN)
    Segment k spans ``[end_{k-1}, end_k)``; the first starts at 0. Every
    frame up to the last utterance's end belongs to exactly one segment, so
    silence before an utterance travels with it (the original code's
    ``prev_end_time`` rule). ``tail=True`` adds a segment, with empty text,
    for the frames after the last utterance.
``exact``
    Segment k spans ``[start_k, end_k)``: only the frames while the
    utterance is spoken. Frames between utterances belong to no segment.

Frame and sample ranges are exact: frame ``i`` (0-based) is shown at time
``i / fps`` and belongs to a segment ``[t0, t1)`` when ``t0 <= i / fps < t1``,
so ``frame_start = ceil(t0 * fps)`` and ``frame_stop = ceil(t1 * fps)``,
computed in rational arithmetic (``fps`` as a fraction such as 30000/1001,
times quantised to the microsecond) so no float rounding moves a boundary.
Audio samples follow the same rule at ``sample_rate``. Contiguous segments
therefore never overlap or leave a gap. (The original code computed
``int(start * fps)`` and ``int((end - start) * fps)`` in floats, which can
lose or repeat a frame at a boundary.)

Frame ``i`` is Aff-Wild2 image ``{i + 1:05d}.jpg`` and annotation line
``i + 1`` after the header.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Iterable

from maven_fast.data.report import Report
from maven_fast.data.transcripts import Utterance

MODES = ("contiguous", "exact")


@dataclass(frozen=True)
class Segment:
    """One segment: its time span, its text, and its frame and sample ranges (half-open)."""

    index: int
    start: float
    end: float
    text: str
    frame_start: int
    frame_stop: int
    sample_start: int
    sample_stop: int
    speaker: str | None = None
    kind: str = "utterance"
    """``utterance``, ``tail`` (after the last utterance) or ``whole`` (no transcript)."""
    line: int | None = None
    """Transcript line of the utterance, for messages."""

    @property
    def num_frames(self) -> int:
        return self.frame_stop - self.frame_start

    @property
    def num_samples(self) -> int:
        return self.sample_stop - self.sample_start

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict) -> "Segment":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def as_fraction(rate: float | int | Fraction) -> Fraction:
    """A frame or sample rate as an exact fraction (29.97 -> 2997/100, 29.97002997... -> 30000/1001)."""
    if isinstance(rate, Fraction):
        value = rate
    elif isinstance(rate, int):
        value = Fraction(rate)
    else:
        value = Fraction(float(rate)).limit_denominator(1_000_000)
    if value <= 0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    return value


def time_fraction(seconds: float) -> Fraction:
    """A time in seconds, quantised to the microsecond, as an exact fraction."""
    return Fraction(round(float(seconds) * 1_000_000), 1_000_000)


def first_index_at(seconds: float, rate: Fraction) -> int:
    """Index of the first frame (or sample) whose time ``i / rate`` is ``>= seconds``."""
    return max(0, math.ceil(time_fraction(seconds) * rate))


def segment(utterances: Iterable[Utterance], mode: str = "contiguous", *, fps: float | Fraction,
            sample_rate: int = 16000, num_frames: int | None = None, tail: bool = False,
            source: str = "", report: Report | None = None) -> list[Segment]:
    """Segments of a video from its time-ordered utterances.

    ``num_frames`` (the video's frame count) clips segments to the video:
    a segment running past the end is shortened and one starting after the
    end is skipped, both reported against ``source`` (the transcript's path)
    in ``report``. ``tail`` (contiguous mode, needs ``num_frames``) adds the
    frames after the last utterance as a final segment with empty text.
    Segments that span no frame are kept and reported (they carry no labels).
    """
    if mode not in MODES:
        raise ValueError(f"segmentation mode must be one of {MODES}, got {mode!r}")
    if tail and num_frames is None:
        raise ValueError("tail=True needs num_frames (the video's frame count)")
    report = report if report is not None else Report()
    fps_q, sr_q = as_fraction(fps), as_fraction(sample_rate)
    spans = _contiguous_spans(list(utterances), source, report) if mode == "contiguous" \
        else [(u.start, u.end, u) for u in utterances]
    video_end = float(Fraction(num_frames) / fps_q) if num_frames is not None else None
    segments: list[Segment] = []
    for start, end, u in spans:
        if video_end is not None and first_index_at(max(start, u.start), fps_q) >= num_frames:
            # Spoken after the video ends: its words belong to no frame (in contiguous mode
            # the frames before it stay unassigned unless tail=True).
            report.add(source, f"utterance [{u.start:g}s - {u.end:g}s] starts after the video "
                               f"ends ({video_end:.3f}s, {num_frames} frames); skipped", line=u.line)
            continue
        if video_end is not None and end > video_end:
            report.add(source, f"utterance [{u.start:g}s - {u.end:g}s] runs past the video end "
                               f"({video_end:.3f}s); its segment is cut there", line=u.line)
            end = video_end
        segments.append(_make(len(segments), start, end, u.text, u.speaker, "utterance", u.line,
                              fps_q, sr_q, num_frames))
    if tail and mode == "contiguous":
        last_end = spans[-1][1] if spans else 0.0
        if first_index_at(last_end, fps_q) < num_frames:
            segments.append(_make(len(segments), last_end, video_end, "", None, "tail", None,
                                  fps_q, sr_q, num_frames))
    for s in segments:
        if s.num_frames == 0:
            report.add(source, f"segment {s.index} [{s.start:g}s - {s.end:g}s] spans no video "
                               f"frame at {float(fps_q):g} fps; it carries no labels", line=s.line)
    return segments


def whole_video_segment(num_frames: int, fps: float | Fraction, sample_rate: int = 16000,
                        text: str = "") -> Segment:
    """One segment covering the whole video (for a video without a transcript)."""
    fps_q = as_fraction(fps)
    return _make(0, 0.0, float(Fraction(num_frames) / fps_q), text, None, "whole", None, fps_q,
                 as_fraction(sample_rate), num_frames)


def _contiguous_spans(utterances: list[Utterance], source: str, report: Report):
    """MAVEN's ``[end_{k-1}, end_k)`` spans; an utterance ending inside the previous span
    is merged (text appended) into it, and reported."""
    spans: list[tuple[float, float, Utterance]] = []
    prev_end = 0.0
    for u in utterances:
        if u.end <= prev_end and spans:
            start, end, owner = spans[-1]
            report.add(source, f"utterance [{u.start:g}s - {u.end:g}s] ends before the previous "
                               f"segment does ({prev_end:g}s); its text is appended to that "
                               "segment", line=u.line)
            spans[-1] = (start, end, replace(owner, text=f"{owner.text} {u.text}".strip()))
            continue
        spans.append((prev_end, u.end, u))
        prev_end = u.end
    return spans


def _make(index, start, end, text, speaker, kind, line, fps_q, sr_q, num_frames) -> Segment:
    frame_start, frame_stop = first_index_at(start, fps_q), first_index_at(end, fps_q)
    if num_frames is not None:
        frame_start, frame_stop = min(frame_start, num_frames), min(frame_stop, num_frames)
    return Segment(index=index, start=float(start), end=float(end), text=text,
                   frame_start=frame_start, frame_stop=max(frame_start, frame_stop),
                   sample_start=first_index_at(start, sr_q),
                   sample_stop=max(first_index_at(start, sr_q), first_index_at(end, sr_q)),
                   speaker=speaker, kind=kind, line=line)
