"""Pre-extracted frame folders (``cropped_aligned/<video>/00001.jpg``) and image files.

Aff-Wild2 ships face crops as one folder per video with images named by
1-based frame number: ``00001.jpg`` is frame 0 of the video, shown at time 0.
Numbers may have gaps (no face was found in that frame); a gap never shifts
the numbering. When a frame range is read, a missing image is replaced by the
nearest present one (the previous, else the next) and flagged as absent, so
the frame timeline stays regular and callers can mask the frame out.

Images are read with Pillow when it is installed, else with PyAV.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from maven_fast.data.report import DataError, Report

IMAGE_NAME = re.compile(r"^(\d+)\.(jpe?g|png|bmp)$", re.IGNORECASE | re.ASCII)
#: The highest frame number a numbered image may carry (about 4 days at 30 fps); a larger
#: one (e.g. ``99999999999.jpg``) is not a frame of a video and is reported as stray.
MAX_FRAME_NUMBER = 10**7


def frame_number(name: str) -> int | None:
    """The 1-based frame number of an image name such as ``00012.jpg``, or None when the name
    is not a numbered image (or its number is 0 or above :data:`MAX_FRAME_NUMBER`)."""
    m = IMAGE_NAME.match(name)
    digits = m.group(1).lstrip("0") if m else ""
    if not m or len(digits) > len(str(MAX_FRAME_NUMBER)):
        return None
    number = int(digits or 0)  # (leading zeros gone: int() refuses over 4300 digits)
    return number if 1 <= number <= MAX_FRAME_NUMBER else None


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as RGB uint8 ``[H, W, 3]``; ``size=(width, height)`` resizes."""
    path = str(path)
    try:
        from PIL import Image
    except ImportError:
        return _read_image_av(path, size)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != tuple(size):
                img = img.resize(tuple(size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read image: {err}", fix="replace or delete the file") from None


def _read_image_av(path: str, size: tuple[int, int] | None) -> np.ndarray:
    import av

    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0))
            kwargs = {"width": size[0], "height": size[1]} if size is not None else {}
            return frame.to_ndarray(format="rgb24", **kwargs)
    except (av.error.FFmpegError, StopIteration, OSError) as err:
        raise DataError(path, f"cannot read image: {err}", fix="replace or delete the file") from None


def write_jpeg(path: str | os.PathLike, image: np.ndarray, quality: int = 90) -> None:
    """Write an RGB uint8 ``[H, W, 3]`` array as a JPEG file."""
    try:
        from PIL import Image
    except ImportError:
        _write_jpeg_av(str(path), image)
        return
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(path, quality=quality)


def _write_jpeg_av(path: str, image: np.ndarray) -> None:
    import av

    height, width = image.shape[:2]
    with av.open(path, "w", format="image2") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj444p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class FrameFolder:
    """A folder of frame images named by 1-based frame number (gaps allowed).

    ``num_frames`` is the highest frame number present (images after the last
    one cannot be known to exist). Files that are not numbered images are
    reported and ignored; hidden files are ignored quietly.
    """

    def __init__(self, path: str | os.PathLike, *, size: tuple[int, int] | None = None,
                 report: Report | None = None):
        self.path = str(path)
        self.size = size
        self.report = report if report is not None else Report()
        if not os.path.isdir(self.path):
            raise DataError(self.path, "frame folder not found", fix="check the path")
        files: dict[int, str] = {}
        stray = []
        for name in os.listdir(self.path):
            number = frame_number(name)
            if number is not None:
                if number in files:
                    self.report.add(self.path, f"frame {number} has two images ({files[number]}, "
                                               f"{name}); using {min(files[number], name)}")
                    files[number] = min(files[number], name)
                else:
                    files[number] = name
            elif not name.startswith("."):
                stray.append(name)
        if stray:
            self.report.add(self.path, f"{len(stray)} file(s) are not numbered frame images and "
                                       f"are ignored (e.g. {sorted(stray)[0]!r})")
        if not files:
            raise DataError(self.path, "frame folder holds no numbered images (00001.jpg, ...)",
                            fix="extract frames named by 1-based frame number")
        self._files = files
        self.numbers = np.array(sorted(files), dtype=np.int64)
        self.num_frames = int(self.numbers[-1])
        self.num_missing = self.num_frames - len(files)

    def present(self, start: int, stop: int) -> np.ndarray:
        """Bool ``[stop - start]``: whether frames ``start..stop-1`` (0-based) have an image."""
        return np.array([i + 1 in self._files for i in range(start, stop)], dtype=bool)

    def image_path(self, frame: int) -> str | None:
        """Path of 0-based ``frame``'s image, or None if it is missing."""
        name = self._files.get(frame + 1)
        return os.path.join(self.path, name) if name else None

    def nearest_present(self, frame: int) -> int:
        """The 0-based frame with an image nearest to ``frame`` (earlier wins a tie)."""
        number = frame + 1
        pos = int(np.searchsorted(self.numbers, number))
        candidates = [int(self.numbers[p]) for p in (pos - 1, pos) if 0 <= p < len(self.numbers)]
        return min(candidates, key=lambda c: (abs(c - number), c)) - 1

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``[start, stop)`` as uint8 ``[n, H, W, 3]`` and their presence ``[n]``.

        Missing images are filled with the nearest present image. All images
        are brought to ``size`` (or to the first image's size).
        """
        present = self.present(start, stop)
        images, cache = [], {}
        for i in range(start, stop):
            source = i if present[i - start] else self.nearest_present(i)
            if source not in cache:
                cache = {source: self._load(source)}  # keep at most one decoded image
            images.append(cache[source])
        if not images:
            return np.zeros((0, 1, 1, 3), np.uint8), present
        return np.stack(images), present

    def iter_frames(self, start: int, stop: int, chunk: int = 64):
        """Yield ``(frames, present)`` for ``[start, stop)`` in chunks of ``chunk`` frames."""
        for a in range(start, stop, chunk):
            yield self.read(a, min(stop, a + chunk))

    def _load(self, frame: int) -> np.ndarray:
        image = read_image(self.image_path(frame), self.size)
        if self.size is None:
            self.size = (image.shape[1], image.shape[0])
        elif image.shape[:2] != (self.size[1], self.size[0]):
            image = read_image(self.image_path(frame), self.size)
        return image


def numbered_images(path: str | os.PathLike) -> list[str]:
    """Names of the numbered frame images in a folder, in frame order."""
    names = [n for n in os.listdir(path) if frame_number(n) is not None]
    return sorted(names, key=lambda n: (frame_number(n), n))


def frame_folder_exists(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(frame_number(n) is not None for n in os.listdir(p))
