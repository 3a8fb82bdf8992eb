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
checks the equality against a cache. Memory is bounded by one group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from maven_fast.data import Segment
from maven_fast.data.extract import MIN_AUDIO_SAMPLES


@dataclass
class SegmentFeatures:
    """The encoder outputs of one segment (CPU, float32 unless a storage dtype was applied)."""

    segment: Segment
    video: torch.Tensor         # [Tv, Dv]
    audio: torch.Tensor         # [Ta, Da]
    audio_pooled: torch.Tensor  # [Da]
    text: torch.Tensor          # [Tt, Dt]
    text_pooled: torch.Tensor   # [Dt]

    def as_dtype(self, dtype: torch.dtype) -> "SegmentFeatures":
        """The features rounded through ``dtype`` (as a cache stored in that type holds them), as float32."""
        if dtype == torch.float32:
            return self
        cast = {k: getattr(self, k).to(dtype).float() for k in ("video", "audio", "audio_pooled", "text",
                                                                 "text_pooled")}
        return SegmentFeatures(self.segment, **cast)


def encode_segments(frames, audio, segments: list[Segment], encoders, *, batch_size: int = 8,
                    frame_batch: int = 64, max_audio_seconds: float = 30.0
                    ) -> Iterator[list[SegmentFeatures]]:
    """Yield the features of ``segments`` (each spanning at least one frame), a group of
    ``batch_size`` segments at a time.

    ``frames``: a :class:`~maven_fast.data.VideoReader` (or a
    :class:`~maven_fast.data.FrameFolder`); ``audio``: an
    :class:`~maven_fast.data.AudioReader` at the audio encoder's rate, or None
    for silence; ``encoders``: an :class:`~maven_fast.encoders.EncoderSet`.
    The defaults are ``maven-fast extract``'s.
    """
    if batch_size < 1 or frame_batch < 1:
        raise ValueError(f"batch_size and frame_batch must be positive, got {batch_size}, {frame_batch}")
    empty = [s.index for s in segments if s.num_frames == 0]
    if empty:
        raise ValueError(f"segments {empty} span no video frame; leave them out (extract skips them)")
    for first in range(0, len(segments), batch_size):
        group = segments[first: first + batch_size]
        video = [encode_video(frames, s, encoders.video, frame_batch) for s in group]
        audio_seqs, audio_pooled = encode_audio(group, audio, encoders.audio, max_audio_seconds, batch_size)
        text_seqs, text_pooled = encode_text(group, encoders.text)
        yield [SegmentFeatures(s, video[i], audio_seqs[i], audio_pooled[i], text_seqs[i], text_pooled[i])
               for i, s in enumerate(group)]


@torch.no_grad()
def encode_video(frames, seg: Segment, encoder, frame_batch: int) -> torch.Tensor:
    """``[Tv, Dv]``: one vector per frame of ``seg``, ``frame_batch`` frames per encoder call."""
    from maven_fast.data.frames import FrameFolder

    feats = []
    for chunk in frames.iter_frames(seg.frame_start, seg.frame_stop, frame_batch):
        images = chunk[0] if isinstance(frames, FrameFolder) else chunk  # a folder also yields presence
        feats.append(encoder(encoder.preprocess(torch.from_numpy(np.ascontiguousarray(images)))).float().cpu())
    return torch.cat(feats)


@torch.no_grad()
def encode_audio(group: list[Segment], audio, encoder, max_audio_seconds: float, batch_size: int
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per segment: the audio frame sequence ``[Ta, Da]`` and its mean ``[Da]``."""
    window = max(MIN_AUDIO_SAMPLES, int(max_audio_seconds * encoder.sample_rate))
    pieces: list[tuple[int, torch.Tensor]] = []  # (position in group, waveform window)
    for pos, seg in enumerate(group):
        wave = audio.read(seg.sample_start, seg.sample_stop) if audio is not None \
            else torch.zeros(seg.num_samples)
        if wave.numel() < MIN_AUDIO_SAMPLES:
            wave = torch.cat([wave, torch.zeros(MIN_AUDIO_SAMPLES - wave.numel())])
        for a in range(0, wave.numel(), window):
            piece = wave[a: a + window]
            if piece.numel() < MIN_AUDIO_SAMPLES:  # a tiny last window joins the previous one
                prev_pos, prev = pieces[-1]
                pieces[-1] = (prev_pos, torch.cat([prev, piece]))
            else:
                pieces.append((pos, piece))
    outputs: list[list[torch.Tensor]] = [[] for _ in group]
    device = encoder.device
    for b in range(0, len(pieces), batch_size):
        batch = pieces[b: b + batch_size]
        lengths = torch.tensor([p.numel() for _, p in batch])
        waves = torch.zeros(len(batch), int(lengths.max()))
        for i, (_, p) in enumerate(batch):
            waves[i, : p.numel()] = p
        frames, frame_lengths = encoder(waves.to(device), lengths.to(device))
        for i, (pos, _) in enumerate(batch):
            outputs[pos].append(frames[i, : int(frame_lengths[i])].float().cpu())
    sequences, pooled = [], []
    for parts in outputs:
        seq = torch.cat(parts)
        sequences.append(seq)
        pooled.append(encoder.pool(seq[None].to(device), torch.tensor([seq.shape[0]], device=device))[0]
                      .float().cpu())
    return sequences, pooled


@torch.no_grad()
def encode_text(group: list[Segment], encoder) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per segment: the token features ``[Tt, Dt]`` and their mean over real tokens ``[Dt]``."""
    tokens, lengths = encoder([s.text for s in group])
    pooled = encoder.pool(tokens, lengths, masked=True)
    sequences = [tokens[i, : int(lengths[i])].float().cpu() for i in range(len(group))]
    return sequences, [pooled[i].float().cpu() for i in range(len(group))]
