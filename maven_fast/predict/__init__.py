"""Inference on videos with transcripts (``maven-fast predict``).

- :class:`Predictor`: a training checkpoint, the encoders it names and the
  segmentation settings, loaded once (``Predictor.from_checkpoint``).
- :func:`predict_video`: one video + transcript -> :class:`VideoPrediction`
  (per-frame times, valence, arousal; per-segment rows).
- :func:`encode_segments`: the segment features, exactly as ``maven-fast extract`` caches them.
- :func:`write_prediction`: ``<stem>.segments.csv``, ``<stem>.frames.csv``, ``<stem>.png``.
- :func:`predict_files`: many videos, bad ones listed, ``predict_report.json``.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Predictor": "predictor", "NoCheckpoint": "predictor",
    "PredictSettings": "runner", "VideoPrediction": "runner", "SegmentPrediction": "runner",
    "predict_video": "runner", "run_segment": "runner",
    "SegmentFeatures": "features", "encode_segments": "features",
    "EncoderMismatch": "encoders", "encoders_for": "encoders",
    "write_prediction": "outputs", "SEGMENT_COLUMNS": "outputs", "FRAME_COLUMNS": "outputs",
    "predict_files": "batch", "pair_transcripts": "batch",
    "plot_predictions": "plot",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"maven_fast.predict.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'maven_fast.predict' has no attribute {name!r}")


__all__ = list(_LAZY)
