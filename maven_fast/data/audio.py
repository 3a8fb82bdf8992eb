"""Read the audio of a video (or a WAV/FLAC/MP3 file) as 16 kHz mono, streaming.

Any channel layout and sample format PyAV decodes is mixed down to mono
float32 and resampled with torchaudio's sinc resampler. Reads are of sample
ranges at the target rate; the decoder keeps only the native samples that
later reads can still need, so memory is bounded by the segment, not the
file. A range is resampled with enough context on both sides that the result
equals resampling the whole track at once (up to float rounding).

Sample 0 is aligned with the video's first frame (``origin``): audio that
starts later is preceded by zeros, audio that starts earlier is cut. Reads
past the end of the track return zeros, so AAC padding and a track slightly
shorter than the video never shift anything.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import torch

from maven_fast.data.report import DataError, Report

TARGET_RATE = 16000
_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99  # torchaudio.functional.resample defaults


class AudioReader:
    """Stream mono audio of one file at ``sample_rate`` by sample ranges.

    A file without an audio track reads as silence; that is reported (a
    :class:`~maven_fast.data.report.DataWarning` and an issue in ``report``).
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int = TARGET_RATE, *,
                 origin: float | None = None, report: Report | None = None):
        from maven_fast.data.media import _open

        self.path = str(path)
        self.sample_rate = int(sample_rate)
        self.report = report if report is not None else Report()
        container = _open(self.path)
        try:
            audio = container.streams.audio[0] if container.streams.audio else None
            if origin is None:
                ref = container.streams.video[0] if container.streams.video else audio
                origin = float(ref.start_time * ref.time_base) if ref is not None and \
                    ref.start_time is not None else 0.0
            self.has_audio = audio is not None
            self.native_rate = audio.codec_context.sample_rate if audio is not None else sample_rate
        finally:
            container.close()
        self.origin = origin
        if not self.has_audio:
            self.report.add(self.path, "has no audio track; its audio is read as silence "
                                       "(add a track or give a WAV file to use real audio)")
        self._container = None
        self._reset()

    # ------------------------------------------------------------------ public
    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples ``[start, stop)`` at ``sample_rate`` as float32 ``[stop - start]``."""
        if stop <= start:
            return torch.zeros(0)
        if not self.has_audio:
            return torch.zeros(stop - start)
        if self.native_rate == self.sample_rate:
            return torch.from_numpy(self.read_native(start, stop))
        import torchaudio.functional as AF

        g = math.gcd(self.native_rate, self.sample_rate)
        o, n = self.native_rate // g, self.sample_rate // g
        width = math.ceil(_LOWPASS_WIDTH * o / (min(o, n) * _ROLLOFF))
        pad_blocks = math.ceil(width / o) + 1
        first_block, last_block = start // n, -(-stop // n)
        block0 = max(0, first_block - pad_blocks)
        native = self.read_native(block0 * o, last_block * o + width + o + 1,
                                  clip_to_track=True)
        out = AF.resample(torch.from_numpy(native)[None], self.native_rate, self.sample_rate,
                          lowpass_filter_width=_LOWPASS_WIDTH, rolloff=_ROLLOFF)[0]
        offset = start - block0 * n
        piece = out[offset: offset + (stop - start)]
        if piece.numel() < stop - start:  # past the end of the track
            piece = torch.cat([piece, torch.zeros(stop - start - piece.numel())])
        return piece.contiguous()

    def read_all(self) -> torch.Tensor:
        """The whole track (for short files and tests)."""
        if not self.has_audio:
            return torch.zeros(0)
        self._decode_until(None)
        total = math.ceil(self._decoded_end * self.sample_rate / self.native_rate)
        return self.read(0, total)

    def read_native(self, start: int, stop: int, *, clip_to_track: bool = False) -> np.ndarray:
        """Native-rate mono samples ``[start, stop)``; zeros past the end of the track
        (or, with ``clip_to_track``, the array stops at the end of the track)."""
        if start < self._chunks_start:
            self._reset()
        self._decode_until(stop)
        self._drop_before(start)
        have = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        piece = have[start - self._chunks_start: stop - self._chunks_start]
        if not clip_to_track and piece.size < stop - start:
            piece = np.concatenate([piece, np.zeros(stop - start - piece.size, np.float32)])
        return piece.astype(np.float32, copy=False)

    def close(self) -> None:
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------- internals
    def _reset(self) -> None:
        self.close()
        self._chunks: list[np.ndarray] = []
        self._chunks_start = 0      # native index of self._chunks[0][0]
        self._decoded_end = 0       # native index after the last decoded sample
        self._frames = None
        self._eof = not self.has_audio

    def _decode_until(self, stop: int | None) -> None:
        import av

        if self._frames is None and not self._eof:
            from maven_fast.data.media import _open

            self._container = _open(self.path)
            self._frames = self._container.decode(self._container.streams.audio[0])
            self._first = True
        try:
            while not self._eof and (stop is None or self._decoded_end < stop):
                frame = next(self._frames, None)
                if frame is None:
                    self._eof = True
                    self.close()
                    break
                self._append(frame)
        except av.error.FFmpegError as err:
            near = self._decoded_end / self.native_rate
            raise DataError(self.path, f"audio decoding failed near {near:.2f}s: {err}; the file "
                                       "is corrupt or truncated",
                            fix="re-download or re-encode it, or give a WAV file") from None

    def _append(self, frame) -> None:
        samples = _mono_float(frame)
        if self._first:
            self._first = False
            if frame.pts is not None and frame.time_base is not None:
                offset = round((Fraction(frame.pts) * frame.time_base - Fraction(self.origin))
                               * self.native_rate)
                if offset > 0:
                    self._chunks.append(np.zeros(offset, np.float32))
                    self._decoded_end += offset
                elif offset < 0:
                    samples = samples[-offset:]
        self._chunks.append(samples)
        self._decoded_end += samples.size

    def _drop_before(self, start: int) -> None:
        while self._chunks and self._chunks_start + self._chunks[0].size <= start:
            self._chunks_start += self._chunks.pop(0).size


def _mono_float(frame) -> np.ndarray:
    """Any PyAV audio frame to mono float32 in [-1, 1]."""
    array = frame.to_ndarray()
    channels = max(1, len(frame.layout.channels))
    if not frame.format.is_planar:
        array = array.reshape(-1, channels).T
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif array.dtype == np.int32:
        array = array.astype(np.float32) / 2147483648.0
    elif array.dtype == np.uint8:
        array = (array.astype(np.float32) - 128.0) / 128.0
    return array.astype(np.float32, copy=False).mean(axis=0)


def load_audio(path: str | os.PathLike, sample_rate: int = TARGET_RATE,
               report: Report | None = None) -> torch.Tensor:
    """The whole audio track of a file as mono float32 at ``sample_rate`` (silence if none)."""
    with AudioReader(path, sample_rate, report=report) as reader:
        return reader.read_all()
