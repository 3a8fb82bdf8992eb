"""Encode a video's segments exactly as ``maven-fast extract`` caches them.

A model trained on the feature cache must see the same features at predict
time, so this follows :mod:`maven_fast.data.extract` step for step, through
the encoders' public API only:

* video: the segment's frames in chunks of ``frame_batch``, each chunk
  ``encoder.preprocess`` then ``encoder`` (one vector per frame);
* audio: the segment's samples at 16 kHz (padded to the shortest input an
  encoder accepts), cut into windows of ``max_audio_seconds`` (a tiny last
  window joins the previous one), the windows of ``batch_size`` segments
  encoded ``batch_size`` at a time, the frames re-joined per segment; pooled
  by ``encoder.pool`` (mean over frames);
* text: the texts of ``batch_size`` segments encoded together, pooled over
  the real tokens (``masked=True``).

Segments are processed in the same groups of ``batch_size`` as extract does,
so batch composition, and therefore every float, is the same; the test suite
checks the equality against a cache. Both run the one pipeline of
:mod:`maven_fast.data.pipeline` (decoding ahead of encoding in a background
thread, memory bounded by its queue and one group); this module re-exports it.
"""
from __future__ import annotations

from maven_fast.data.pipeline import (MIN_AUDIO_SAMPLES, SegmentFeatures, StageTimes, encode_audio,
                                      encode_segments, encode_text)

__all__ = ["MIN_AUDIO_SAMPLES", "SegmentFeatures", "StageTimes", "encode_audio", "encode_segments", "encode_text"]
