"""From decoded media to encoder features: the one pipeline ``extract`` and ``predict`` share.

:func:`encode_segments` takes a frame source (a :class:`~maven_fast.data.VideoReader`
or :class:`~maven_fast.data.FrameFolder`), an audio source (an
:class:`~maven_fast.data.AudioReader`, or None for silence), the segments and
the frozen encoders, and yields the features of ``batch_size`` segments at a
time:

* video: each segment's frames in chunks of ``frame_batch``, each chunk
  ``encoder.preprocess`` then ``encoder`` (one vector per frame);
* audio: the segment's samples at 16 kHz (padded to the shortest input an
  encoder accepts), cut into windows of ``max_audio_seconds`` (a tiny last
  window joins the previous one), the windows of a group encoded
  ``batch_size`` at a time, the frames re-joined per segment; pooled by
  ``encoder.pool`` (mean over frames);
* text: the texts of a group encoded together, pooled over the real tokens.

Decoding runs AHEAD of encoding, in a background thread (:class:`DecodeAhead`):
the thread decodes and preprocesses frame chunks and reads each segment's
audio into a queue of at most ``prefetch`` items while the encoders work on
the previous ones (PyAV, the resampler and torch's kernels release the GIL).
Memory is bounded by the queue and one group of segments (``prefetch`` x
``frame_batch`` preprocessed frames, plus a group's audio), whatever the
video's length. When the consumer stops early (an encoder error,
KeyboardInterrupt, a generator closed) the thread is told to stop and joined
before the readers can be closed; an error while decoding (a file corrupt
mid-stream) is raised in the consumer as the reader raised it (a
:class:`~maven_fast.data.DataError` naming the file), after the thread ended.
``prefetch=0`` decodes in the calling thread (no overlap; same results).

Both users get bit-identical features for the same segments and settings
(the tests check a prediction's features against the cache's).
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from maven_fast.data.segmentation import Segment

MIN_AUDIO_SAMPLES = 400  # 25 ms at 16 kHz: the shortest input a HuBERT-style encoder accepts
DEFAULT_PREFETCH = 4

STAGES = ("decode", "preprocess", "wait", "video_encoder", "audio_encoder", "text_encoder")
"""Stage names :class:`StageTimes` accumulates here (``model`` and ``write`` are added by
predict and extract): ``decode`` and ``preprocess`` run in the decode thread, ``wait`` is
the time the encoders waited for it (near 0 when decoding keeps up)."""


@dataclass
class SegmentFeatures:
    """The encoder outputs of one segment (CPU, float32 unless a storage dtype was applied)."""

    segment: Segment
    video: torch.Tensor         # [Tv, Dv]
    audio: torch.Tensor         # [Ta, Da]
    audio_pooled: torch.Tensor  # [Da]
    text: torch.Tensor          # [Tt, Dt]
    text_pooled: torch.Tensor   # [Dt]
    present: torch.Tensor | None = None  # [Tv] bool: frame images present (frame folders); None: all

    def as_dtype(self, dtype: torch.dtype) -> "SegmentFeatures":
        """The features rounded through ``dtype`` (as a cache stored in that type holds them), as float32."""
        if dtype == torch.float32:
            return self
        cast = {k: getattr(self, k).to(dtype).float() for k in ("video", "audio", "audio_pooled", "text",
                                                                 "text_pooled")}
        return SegmentFeatures(self.segment, present=self.present, **cast)


@dataclass
class StageTimes:
    """Seconds spent per pipeline stage and frames seen (thread safe; for benchmarks and logs)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    frames: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    @contextlib.contextmanager
    def stage(self, name: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - began)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return dict(self.seconds)


class _Stopped(Exception):
    """The consumer asked the decode thread to stop."""


class DecodeAhead:
    """Iterate ``items`` (an iterator: the decoding work) in a background thread, ahead of the consumer.

    The queue holds at most ``maxsize`` items (the thread blocks when it is
    full), so it is never more than ``maxsize`` items ahead. An exception
    raised by ``items`` is re-raised by the iteration (after the thread
    ended); :meth:`close` (also on leaving a ``with`` block) stops and joins
    the thread. ``high_water`` is the largest number of items the queue held.
    """

    _DONE = object()

    def __init__(self, items: Iterator, maxsize: int, name: str = "maven-fast-decode") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1 (0 would make the queue unbounded), got {maxsize}")
        self.maxsize = maxsize
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.high_water = 0
        self._items = items
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _put(self, item) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self.queue.put(item, timeout=0.05)
            except queue.Full:
                continue
            self.high_water = max(self.high_water, self.queue.qsize())
            return

    def _run(self) -> None:
        try:
            for item in self._items:
                self._put(item)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._error = exc
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        with contextlib.suppress(_Stopped):
            self._put(self._DONE)

    def __iter__(self) -> Iterator:
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    break  # the thread ended without its end marker (stopped)
                continue
            if item is self._DONE:
                break
            yield item
        self.thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Stop the thread (it notices within one item) and wait for it; drop what is queued."""
        self._stop.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self.queue.get_nowait()
            self.thread.join(timeout=0.05)
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_segments(frames, audio, segments: list[Segment], encoders, *, batch_size: int = 8,
                    frame_batch: int = 64, max_audio_seconds: float = 30.0,
                    prefetch: int = DEFAULT_PREFETCH, timings: StageTimes | None = None
                    ) -> Iterator[list[SegmentFeatures]]:
    """Yield the features of ``segments`` (each spanning at least one frame), a group of
    ``batch_size`` segments at a time (see the module docstring).

    ``frames``: a :class:`~maven_fast.data.VideoReader` or
    :class:`~maven_fast.data.FrameFolder` (a folder also gives each frame's
    presence); ``audio``: an :class:`~maven_fast.data.AudioReader` at the
    audio encoder's rate, or None for silence; ``encoders``: an
    :class:`~maven_fast.encoders.EncoderSet`. ``prefetch``: items (frame
    chunks or segment waveforms) decoded ahead in the background thread; 0
    decodes inline. ``timings``: a :class:`StageTimes` to accumulate into.
    The readers are used by the decode thread until the generator finishes
    or is closed; close them after that.
    """
    if batch_size < 1 or frame_batch < 1:
        raise ValueError(f"batch_size and frame_batch must be positive, got {batch_size}, {frame_batch}")
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0 (0: decode inline), got {prefetch}")
    empty = [s.index for s in segments if s.num_frames == 0]
    if empty:
        raise ValueError(f"segments {empty} span no video frame; leave them out (extract skips them)")
    timings = timings if timings is not None else StageTimes()
    groups = [segments[first: first + batch_size] for first in range(0, len(segments), batch_size)]
    if not groups:
        return
    decoded = _decode(frames, audio, groups, encoders.video, frame_batch, timings)
    if prefetch == 0:  # decode each item when the encoders ask for it: no thread, no overlap
        try:
            yield from _encode_groups(decoded, groups, encoders, batch_size, max_audio_seconds, timings)
        finally:
            decoded.close()
        return
    with DecodeAhead(decoded, prefetch) as items:
        yield from _encode_groups(items, groups, encoders, batch_size, max_audio_seconds, timings)


def _decode(frames, audio, groups: list[list[Segment]], video_encoder, frame_batch: int,
            timings: StageTimes) -> Iterator[tuple]:
    """The decode work, item by item: per segment its preprocessed frame chunks, then its
    waveform; a group marker after each group."""
    from maven_fast.data.frames import FrameFolder

    folder = isinstance(frames, FrameFolder)
    for g, group in enumerate(groups):
        for pos, seg in enumerate(group):
            chunks = frames.iter_frames(seg.frame_start, seg.frame_stop, frame_batch)
            while True:
                began = time.perf_counter()
                chunk = next(chunks, None)
                timings.add("decode", time.perf_counter() - began)
                if chunk is None:
                    break
                images, present = chunk if folder else (chunk, None)
                with timings.stage("preprocess"):
                    pixels = video_encoder.preprocess(torch.from_numpy(np.ascontiguousarray(images)))
                yield ("frames", pos, pixels, present)
            with timings.stage("decode"):
                wave = audio.read(seg.sample_start, seg.sample_stop) if audio is not None \
                    else torch.zeros(seg.num_samples)
            yield ("audio", pos, wave)
        yield ("group", g)


@torch.no_grad()
def _encode_groups(items, groups: list[list[Segment]], encoders, batch_size: int, max_audio_seconds: float,
                   timings: StageTimes) -> Iterator[list[SegmentFeatures]]:
    stream = iter(items)
    for group in groups:
        video: list[list[torch.Tensor]] = [[] for _ in group]
        presence: list[list[np.ndarray]] = [[] for _ in group]
        waves: list[torch.Tensor | None] = [None] * len(group)
        while True:
            began = time.perf_counter()
            item = next(stream)
            timings.add("wait", time.perf_counter() - began)
            kind = item[0]
            if kind == "group":
                break
            if kind == "frames":
                _, pos, pixels, present = item
                with timings.stage("video_encoder"):
                    video[pos].append(encoders.video(pixels).float().cpu())
                presence[pos].append(present if present is not None else np.ones(pixels.shape[0], dtype=bool))
                timings.frames += int(pixels.shape[0])
            else:
                _, pos, wave = item
                waves[pos] = wave
        with timings.stage("audio_encoder"):
            audio_seqs, audio_pooled = encode_audio(waves, encoders.audio, max_audio_seconds, batch_size)
        with timings.stage("text_encoder"):
            text_seqs, text_pooled = encode_text(group, encoders.text)
        yield [SegmentFeatures(s, torch.cat(video[i]), audio_seqs[i], audio_pooled[i], text_seqs[i], text_pooled[i],
                               torch.from_numpy(np.concatenate(presence[i])))
               for i, s in enumerate(group)]


@torch.no_grad()
def encode_audio(waves: list[torch.Tensor], encoder, max_audio_seconds: float, batch_size: int
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per waveform (a group's segments): the audio frame sequence ``[Ta, Da]`` and its mean ``[Da]``."""
    window = max(MIN_AUDIO_SAMPLES, int(max_audio_seconds * encoder.sample_rate))
    pieces: list[tuple[int, torch.Tensor]] = []  # (position in group, waveform window)
    for pos, wave in enumerate(waves):
        if wave.numel() < MIN_AUDIO_SAMPLES:
            wave = torch.cat([wave, torch.zeros(MIN_AUDIO_SAMPLES - wave.numel())])
        for a in range(0, wave.numel(), window):
            piece = wave[a: a + window]
            if piece.numel() < MIN_AUDIO_SAMPLES:  # a tiny last window joins the previous one
                prev_pos, prev = pieces[-1]
                pieces[-1] = (prev_pos, torch.cat([prev, piece]))
            else:
                pieces.append((pos, piece))
    outputs: list[list[torch.Tensor]] = [[] for _ in waves]
    device = encoder.device
    for b in range(0, len(pieces), batch_size):
        batch = pieces[b: b + batch_size]
        lengths = torch.tensor([p.numel() for _, p in batch])
        padded = torch.zeros(len(batch), int(lengths.max()))
        for i, (_, p) in enumerate(batch):
            padded[i, : p.numel()] = p
        frames, frame_lengths = encoder(padded.to(device), lengths.to(device))
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
