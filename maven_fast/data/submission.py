"""ABAW valence-arousal submission files.

Format: header ``image_location,valence,arousal``, then one row per frame,
``<name>/<frame:05d>.jpg,<valence>,<arousal>`` with 1-based frame numbers.
The rows (and their order) come from the organisers' frame list (their
template/example file, or a plain list of image locations); frames for
which the model made no prediction (e.g. no face, or outside every segment)
get values linearly interpolated in frame number between the nearest
predicted frames of the same video (the nearest value before the first or
after the last). Values are clipped to [-1, 1].
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from typing import Mapping, Sequence

import numpy as np

from maven_fast.data.report import DataError, Report
from maven_fast.config import FLOAT32_MAX

HEADER = ("image_location", "valence", "arousal")
_LOCATION = re.compile(r"^(?P<name>.+)/(?P<frame>\d+)\.(jpe?g|png)$", re.IGNORECASE | re.ASCII)

Predictions = Mapping[str, "np.ndarray | tuple[np.ndarray, np.ndarray]"]
"""Per video name: dense values ``[N, 2]`` for frames 1..N (NaN rows = no prediction),
or ``(frame_numbers [n] 1-based, values [n, 2])``."""


def parse_location(location: str, *, path: str = "", line: int | None = None) -> tuple[str, int]:
    """``'video/00012.jpg'`` -> ``('video', 12)``."""
    from maven_fast.data.frames import MAX_FRAME_NUMBER

    m = _LOCATION.match(location.strip().replace("\\", "/"))
    if not m:
        raise DataError(path, f"not an image location '<video>/<frame>.jpg': {location[:80]!r}",
                        line=line, fix="use the organisers' frame list")
    digits = m.group("frame").lstrip("0")
    if len(digits) > len(str(MAX_FRAME_NUMBER)) or int(digits or 0) > MAX_FRAME_NUMBER:
        raise DataError(path, f"frame number of {location[:80]!r} is above {MAX_FRAME_NUMBER}",
                        line=line, fix="use the organisers' frame list")
    return m.group("name"), int(digits or 0)  # (leading zeros gone: int() refuses over 4300 digits)


def _csv_rows(path: str):
    """``(line, row)`` of a CSV file (UTF-8 with or without BOM, or UTF-16 with BOM): the line
    where each row starts. Undecodable bytes or broken CSV quoting raise :class:`DataError`."""
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-16") if raw.startswith((b"\xff\xfe", b"\xfe\xff")) \
            else raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})", line=line,
                        fix="save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(path, f"not a valid CSV file: {err}", line=reader.line_num or 1,
                        fix="check the quoting of this line") from None


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise DataError(path, f"cannot read the file: {err.strerror or err}",
                        fix="check the path and its permissions") from None


def read_frame_list(path: str | os.PathLike) -> list[str]:
    """Image locations from the organisers' list: a CSV whose first column is the
    location (with or without the header) or one location per line."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(path, "frame list not found", fix="check the path")
    locations = []
    for lineno, row in _csv_rows(path):
        if not row or not row[0].strip():
            continue
        if lineno == 1 and row[0].strip().lower() == HEADER[0]:
            continue
        parse_location(row[0], path=path, line=lineno)
        locations.append(row[0].strip().replace("\\", "/"))
    if not locations:
        raise DataError(path, "frame list holds no image location", fix="use the organisers' list")
    return locations


def read_name_list(path: str | os.PathLike) -> list[str]:
    """Video (person) names from the organisers' list of test videos (one name per line,
    extensions ignored) or from their frame list (``<name>/00001.jpg`` rows), in order."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(path, "list of videos not found", fix="check the path")
    names: dict[str, None] = {}
    for lineno, row in _csv_rows(path):
        cell = row[0].strip().replace("\\", "/") if row else ""
        if not cell or (lineno == 1 and cell.lower() in (HEADER[0], "name", "video")):
            continue
        if "/" in cell:
            name, _ = parse_location(cell, path=path, line=lineno)
        else:
            name = os.path.splitext(cell)[0] if cell.lower().endswith(
                (".mp4", ".avi", ".mkv", ".mov", ".webm", ".txt")) else cell
        if not name:  # ".mp4" alone
            raise DataError(path, f"not a video name: {cell[:80]!r}", line=lineno,
                            fix="one name per line, or a frame list")
        names[name] = None
    if not names:
        raise DataError(path, "holds no video name", fix="one name per line, or a frame list")
    return list(names)


def frame_list_from_folders(frames_root: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """A frame list from crop folders (every image present), when no official list exists."""
    from maven_fast.data.frames import numbered_images

    return [f"{name}/{image}" for name in names
            for image in numbered_images(os.path.join(frames_root, name))]


def _sparse(values) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(values, tuple):
        frames, vals = (np.asarray(v) for v in values)
    else:
        vals = np.asarray(values)
        frames = np.arange(1, len(vals) + 1)
    vals = vals.astype(np.float64).reshape(-1, 2)
    keep = np.isfinite(vals).all(axis=1)
    frames, vals = frames[keep].astype(np.int64), vals[keep]
    unique, inverse = np.unique(frames, return_inverse=True)
    if len(unique) < len(frames):  # a frame predicted twice (overlapping segments): average
        sums = np.zeros((len(unique), 2))
        np.add.at(sums, inverse, vals)
        return unique, sums / np.bincount(inverse)[:, None]
    order = np.argsort(frames, kind="stable")
    return frames[order], vals[order]


def write_submission(path: str | os.PathLike, predictions: Predictions,
                     frame_list: Sequence[str] | str | os.PathLike | None = None,
                     report: Report | None = None) -> Report:
    """Write an ABAW VA submission file; returns the report (interpolated frames).

    ``frame_list``: the organisers' image locations (a list, or the path of
    their file). Without it, every frame from 1 to the last predicted frame of
    each video is written. A video in the list with no prediction at all is
    an error naming it.
    """
    report = report if report is not None else Report()
    path = str(path)
    per_video = {name: _sparse(v) for name, v in predictions.items()}
    if frame_list is None:
        frame_list = [f"{name}/{f:05d}.jpg" for name, (frames, _) in sorted(per_video.items())
                      if len(frames) for f in range(1, int(frames[-1]) + 1)]
    elif isinstance(frame_list, (str, os.PathLike)):
        frame_list = read_frame_list(frame_list)
    parsed = [parse_location(loc) for loc in frame_list]
    missing = sorted({name for name, _ in parsed if len(per_video.get(name, ((), ()))[0]) == 0})
    if missing:
        raise DataError(path, f"no prediction for {len(missing)} video(s) of the frame list: "
                              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                        fix="predict every video in the organisers' list")
    interpolated: dict[str, int] = {}
    by_video: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(parsed):
        by_video.setdefault(name, []).append(i)
    values = np.zeros((len(parsed), 2))
    for name, positions in by_video.items():
        frames, vals = per_video[name]
        wanted = np.array([parsed[i][1] for i in positions])
        got = np.stack([np.interp(wanted, frames, vals[:, c]) for c in range(2)], axis=1)
        values[positions] = got
        n_interp = int((~np.isin(wanted, frames)).sum())
        if n_interp:
            interpolated[name] = n_interp
    if interpolated:
        total = sum(interpolated.values())
        report.add(path, f"{total} frame(s) of {len(interpolated)} video(s) had no prediction "
                         "and were interpolated", warn=False)
    np.clip(values, -1.0, 1.0, out=values)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        for loc, (v, a) in zip(frame_list, values):
            f.write(f"{loc},{v:.6f},{a:.6f}\n")
    os.replace(tmp, path)
    return report


def read_submission(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A submission file back to ``{video: (frame_numbers, values [n, 2])}``."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(path, "submission file not found", fix="check the path")
    out: dict[str, tuple[list[int], list[tuple[float, float]]]] = {}
    rows = _csv_rows(path)
    _, header = next(rows, (1, None))
    if header is None or tuple(h.strip().lower() for h in header) != HEADER:
        raise DataError(path, f"expected the header {','.join(HEADER)!r}", line=1,
                        fix="write it with write_submission")
    for lineno, row in rows:
        if not row:
            continue
        if len(row) != 3:
            raise DataError(path, f"expected 3 columns, found {len(row)}", line=lineno)
        name, frame = parse_location(row[0], path=path, line=lineno)
        try:
            value = (float(row[1]), float(row[2]))
        except ValueError:
            value = None
        # (kept as float32: a finite value past its range, 3.4e38, would turn into inf)
        if value is None or not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in value):
            raise DataError(path, f"values are not finite float32 numbers: {[c[:40] for c in row[1:]]!r}",
                            line=lineno)
        frames, vals = out.setdefault(name, ([], []))
        frames.append(frame)
        vals.append(value)
    return {name: (np.array(f, np.int64), np.array(v, np.float32).reshape(-1, 2))
            for name, (f, v) in out.items()}
