"""From real video files and transcripts to model inputs.

- :func:`read_transcript`: MAVEN ``[a s - b s]: text``, SRT, WebVTT, Whisper /
  faster-whisper / WhisperX JSON, Whisper TSV -> :class:`Utterance` list + report.
- :func:`segment`: ``contiguous`` (MAVEN) or ``exact`` segments with exact
  frame and audio-sample ranges.
- :class:`VideoReader`, :class:`AudioReader`, :class:`FrameFolder`: streaming
  decoding of video files (PyAV), audio at 16 kHz mono, frame-image folders.
- :func:`read_va_annotations`, :func:`build_split`, :func:`write_submission`:
  Aff-Wild2 / ABAW valence-arousal data.
- :func:`make_synthetic_dataset`: a small Aff-Wild2-shaped dataset whose labels
  are carried by the signals.
- :func:`extract_features`, :class:`FeatureCacheDataset`, :func:`collate_segments`:
  the frozen-encoder feature cache that training reads.

Recoverable problems are reported (:class:`DataWarning` + a returned
:class:`Report`); unusable input raises :class:`DataError` naming the file.
"""
from __future__ import annotations

import importlib

from maven_fast.data.report import DataError, DataWarning, Issue, Report
from maven_fast.data.segmentation import MODES, Segment, segment, whole_video_segment
from maven_fast.data.transcripts import (FORMATS, Transcript, Utterance, Word, read_transcript,
                                         write_transcript)

# Heavier modules (PyAV, torchaudio, encoders) load on first use.
_LAZY = {
    "VideoInfo": "media", "VideoReader": "media", "probe_video": "media",
    "AudioReader": "audio", "load_audio": "audio",
    "FrameFolder": "frames", "read_image": "frames", "write_jpeg": "frames",
    "read_va_annotations": "annotations", "write_va_annotations": "annotations",
    "AffWild2Layout": "affwild2", "VideoEntry": "affwild2", "SplitIndex": "affwild2",
    "build_split": "affwild2", "SPLITS": "affwild2",
    "write_submission": "submission", "read_submission": "submission",
    "read_frame_list": "submission",
    "make_synthetic_dataset": "synth",
    "extract_features": "extract", "ExtractResult": "extract",
    "FeatureCacheDataset": "dataset", "collate_segments": "dataset",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"maven_fast.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'maven_fast.data' has no attribute {name!r}")


__all__ = ["DataError", "DataWarning", "Issue", "Report", "MODES", "Segment", "segment",
           "whole_video_segment", "FORMATS", "Transcript", "Utterance", "Word", "read_transcript",
           "write_transcript", *_LAZY]
