"""Decode video frames from real files, streaming, on the video's constant frame grid.

PyAV (which bundles FFmpeg) opens anything FFmpeg can. The frame rate comes
from the container (``average_rate``, an exact fraction such as 30000/1001).
Frames are placed on the grid ``i / fps`` by their timestamps, so a variable
frame rate file gives the same frame numbering a constant-rate extraction
(``ffmpeg -vsync cfr``) would: a frame is repeated to fill a gap and a frame
falling on an already filled grid slot is dropped; both are counted in
:attr:`VideoReader.repeated` and :attr:`VideoReader.dropped`.

Only the frames asked for are held in memory: :meth:`VideoReader.iter_frames`
yields chunks of a frame range while decoding, so memory is bounded by the
chunk (or the segment), never the whole video.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from maven_fast.data.report import DataError, Report

END_TOLERANCE_FRAMES = 2
"""A video that decodes up to this many frames fewer than its header states is padded
by repeating its last frame (reported); more missing frames are an error."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video file."""

    path: str
    fps: Fraction
    num_frames: int
    width: int
    height: int
    duration: float
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None

    def to_dict(self) -> dict:
        return {"path": self.path, "fps": f"{self.fps.numerator}/{self.fps.denominator}",
                "num_frames": self.num_frames, "width": self.width, "height": self.height,
                "duration": self.duration, "has_audio": self.has_audio,
                "audio_sample_rate": self.audio_sample_rate}


def _open(path: str):
    import av

    if not os.path.isfile(path):
        raise DataError(path, "video file not found", fix="check the path")
    try:
        return av.open(path)
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(path, f"cannot open as a video ({err.__class__.__name__}: {err}); the "
                              "file may be truncated, corrupt or not a media file",
                        fix="re-download or re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
                        ) from None


def probe_video(path: str | os.PathLike, *, count_frames: bool = False) -> VideoInfo:
    """Read a video's fps, frame count, size and audio facts from its container.

    The frame count is the container's when it states one, else
    ``duration * fps`` rounded; ``count_frames=True`` decodes the file to count
    exactly (slow, but right for files whose header lies).
    """
    path = str(path)
    container = _open(path)
    try:
        if not container.streams.video:
            raise DataError(path, "has no video stream", fix="give a file with a video track, "
                                                               "or a folder of frame images")
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps:
            raise DataError(path, "the container states no frame rate",
                            fix="re-encode with a constant frame rate (ffmpeg -r 30)")
        fps = Fraction(fps.numerator, fps.denominator)
        duration = _stream_duration(container, stream)
        if count_frames:
            with VideoReader(path, size=(16, 16)) as reader:
                num_frames = sum(len(chunk) for chunk in reader.iter_frames(0, None, chunk=256))
        elif stream.frames and stream.frames > 0:
            num_frames = int(stream.frames)
        elif duration is not None:
            num_frames = int(round(duration * fps))
        else:
            raise DataError(path, "the container states neither frame count nor duration",
                            fix="probe with count_frames=True, or re-encode the file")
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(path=path, fps=fps, num_frames=num_frames,
                         width=stream.codec_context.width, height=stream.codec_context.height,
                         duration=float(duration) if duration is not None else float(num_frames / fps),
                         has_audio=audio is not None,
                         audio_sample_rate=audio.codec_context.sample_rate if audio else None,
                         audio_channels=audio.codec_context.channels if audio else None)
    finally:
        container.close()


def _stream_duration(container, stream) -> Fraction | None:
    if stream.duration is not None and stream.time_base is not None:
        return Fraction(stream.duration) * stream.time_base
    if container.duration is not None:
        return Fraction(container.duration, 1_000_000)
    return None


class VideoReader:
    """Stream RGB frames of one video file, numbered on its constant frame grid.

    ``size=(width, height)`` resizes while decoding (keeps memory small for
    HD files). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, *, size: tuple[int, int] | None = None,
                 report: Report | None = None, info: VideoInfo | None = None):
        self.path = str(path)
        self.info = info or probe_video(self.path)
        self.size = size
        self.report = report if report is not None else Report()
        self.repeated = 0
        self.dropped = 0
        self._container = None
        self._frames: Iterator[tuple[int, np.ndarray]] | None = None
        self._next = 0  # grid index after the last frame returned
        self._last: np.ndarray | None = None  # the last frame returned
        self._pending: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ public
    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as uint8 ``[n, H, W, 3]``."""
        chunks = list(self.iter_frames(start, stop))
        if not chunks:
            h, w = (self.size[1], self.size[0]) if self.size else (self.info.height, self.info.width)
            return np.zeros((0, h, w, 3), np.uint8)
        return np.concatenate(chunks)

    def iter_frames(self, start: int, stop: int | None, chunk: int = 64) -> Iterator[np.ndarray]:
        """Yield frames ``[start, stop)`` in chunks of at most ``chunk`` frames.

        ``stop=None`` reads to the end. Reading forward continues the same
        decode; reading backward restarts it (seeks). Raises
        :class:`DataError` when the file cannot be decoded or ends early.
        """
        if stop is not None and stop <= start:
            return
        if start < self._next or self._frames is None:
            self._restart(start)
        buffer: list[np.ndarray] = []
        index = start
        while stop is None or index < stop:
            item = self._next_frame(index)
            if item is None:
                if stop is not None:
                    buffer.extend(self._pad_end(index, stop))
                break
            buffer.append(item)
            index += 1
            if len(buffer) >= chunk:
                yield np.stack(buffer)
                buffer = []
        if buffer:
            yield np.stack(buffer)

    def _pad_end(self, index: int, stop: int) -> list[np.ndarray]:
        """Decoding ended at ``index`` before ``stop``: pad a few frames, or raise."""
        expected = self.info.num_frames
        close_to_end = index >= expected - END_TOLERANCE_FRAMES and \
            stop <= expected + END_TOLERANCE_FRAMES
        if self._last is None or not close_to_end:
            raise DataError(self.path, f"decoding stopped at frame {index} but frames up to "
                                       f"{stop} were asked for (the header states {expected} "
                                       "frames); the file is truncated or corrupt",
                            fix="re-download or re-encode it, or use its frame folder")
        self.report.add(self.path, f"video decodes to {index} frames, {stop - index} fewer than "
                                   f"needed ({stop}); its last frame is repeated")
        self.repeated += stop - index
        return [self._last] * (stop - index)

    def close(self) -> None:
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None
        self._frames = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()

    # --------------------------------------------------------------- internals
    def _restart(self, start: int) -> None:
        """(Re)open the decoder positioned at or before grid frame ``start``."""
        self.close()
        self._container = _open(self.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._origin = stream.start_time or 0
        if start > 0:
            target = self._origin + int(Fraction(start) / self.info.fps / stream.time_base)
            try:
                self._container.seek(target, stream=stream, backward=True, any_frame=False)
            except Exception:  # some containers cannot seek: decode from the start
                self._container.close()
                self._container = _open(self.path)
                stream = self._container.streams.video[0]
        self._frames = self._grid_frames(stream)
        self._next, self._last, self._pending = start, None, None

    def _grid_frames(self, stream) -> Iterator[tuple[int, np.ndarray]]:
        """Decoded frames placed on the grid: (grid index, RGB array); gaps filled."""
        import av

        fps, time_base = self.info.fps, stream.time_base
        last_index, last_array, count = None, None, 0
        try:
            for frame in self._container.decode(stream):
                if frame.pts is not None and time_base is not None:
                    index = round(Fraction(frame.pts - self._origin) * time_base * fps)
                else:
                    index = count if last_index is None else last_index + 1
                count += 1
                if last_index is not None and index <= last_index:
                    self.dropped += 1
                    continue
                array = self._to_array(frame)
                if last_index is not None:
                    for fill in range(last_index + 1, index):
                        self.repeated += 1
                        yield fill, last_array
                yield index, array
                last_index, last_array = index, array
        except av.error.FFmpegError as err:
            where = f"after frame {last_index}" if last_index is not None else "at its first frame"
            raise DataError(self.path, f"decoding failed {where}: {err}; the file is corrupt or "
                                       "truncated", fix="re-download or re-encode it") from None

    def _next_frame(self, index: int) -> np.ndarray | None:
        """The frame at grid ``index`` (frames before it are skipped), or None at the end."""
        while True:
            if self._pending is not None:
                got, array = self._pending
                self._pending = None
            else:
                got, array = next(self._frames, (None, None))
                if got is None:
                    return None
            if got < index:
                continue
            if got > index:  # a seek landed after the target: the first frame holds its place
                self._pending = (got, array)
                self.repeated += 1
            self._next, self._last = index + 1, array
            return array

    def _to_array(self, frame) -> np.ndarray:
        if self.size is not None:
            return frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])
        return frame.to_ndarray(format="rgb24")
