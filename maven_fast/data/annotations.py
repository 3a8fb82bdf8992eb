"""Aff-Wild2 valence-arousal annotation files.

One file per annotated person (``VA_Estimation_Challenge/Train_Set/<name>.txt``):
a header line ``valence,arousal``, then one line per video frame, line
``k + 1`` for frame ``k`` (image ``{k+1:05d}.jpg``). ``-5`` marks a frame
that was not annotated; such frames are invalid (masked) and their values are
set to 0.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from maven_fast.data.report import DataError, Report

INVALID = -5.0
HEADER = "valence,arousal"


def read_va_annotations(path: str | os.PathLike, *, report: Report | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame labels of one annotation file: float32 ``[N, 2]`` and validity bool ``[N]``.

    Invalid (masked) frames: a ``-5`` in either column, a value outside
    [-1, 1], or a malformed line; the last two are also reported (with line)
    in ``report``. A wrong or missing header raises :class:`DataError`.
    Trailing empty lines are ignored; an empty line inside the file is a
    malformed frame (skipping it would shift every later label).
    """
    path = str(path)
    report = report if report is not None else Report()
    lines = annotation_lines(path, report)
    header = lines[0].strip().replace(" ", "").lower() if lines else ""
    if header != HEADER:
        looks_numeric = _parse_pair(header) is not None
        raise DataError(path, f"expected the header line {HEADER!r}, found {lines[0].strip()[:40]!r}"
                        if lines else "file is empty", line=1,
                        fix="add the header line 'valence,arousal' as line 1" if looks_numeric
                        else "give an Aff-Wild2 VA annotation file (header 'valence,arousal')")
    rows = lines[1:]
    values = np.zeros((len(rows), 2), np.float32)
    valid = np.zeros(len(rows), bool)
    bad_lines = []
    for i, row in enumerate(rows):
        pair = _parse_pair(row)
        if pair is None:
            bad_lines.append(i + 2)
            continue
        if INVALID in pair:
            continue
        if not all(-1.0 <= v <= 1.0 for v in pair):
            report.add(path, f"value {row.strip()!r} is outside [-1, 1]; frame {i + 1} is masked",
                       line=i + 2)
            continue
        values[i] = pair
        valid[i] = True
    if bad_lines:
        report.add(path, f"{len(bad_lines)} malformed line(s) (not 'valence,arousal' numbers), "
                         f"their frames are masked: lines {_short_list(bad_lines)}", line=bad_lines[0])
    return torch.from_numpy(values), torch.from_numpy(valid)


def annotation_lines(path: str | os.PathLike, report: Report, *, warn: bool = True) -> list[str]:
    """The lines of an annotation file (header included), trailing empty lines dropped.

    ``warn=False`` records decoding problems in ``report`` without a warning.
    """
    import warnings

    from maven_fast.data.report import DataWarning
    from maven_fast.data.transcripts import decode_text_file

    path = str(path)
    if not os.path.isfile(path):
        raise DataError(path, "annotation file not found", fix="check the path")
    with warnings.catch_warnings():
        if not warn:
            warnings.simplefilter("ignore", DataWarning)
        text = decode_text_file(path, report)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def align_labels(values: torch.Tensor, valid: torch.Tensor, num_frames: int, *, path: str,
                 report: Report) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels for exactly ``num_frames`` video frames.

    Fewer annotation lines than frames: the frames without a line are masked
    (reported). More lines than frames: the extra lines are ignored (reported).
    """
    n = values.shape[0]
    if n < num_frames:
        report.add(path, f"has {n} label lines but the video has {num_frames} frames; frames "
                         f"{n + 1}..{num_frames} have no label and are masked")
        values = torch.cat([values, torch.zeros(num_frames - n, 2)])
        valid = torch.cat([valid, torch.zeros(num_frames - n, dtype=torch.bool)])
    elif n > num_frames:
        report.add(path, f"has {n} label lines but the video has {num_frames} frames; the last "
                         f"{n - num_frames} lines are ignored")
        values, valid = values[:num_frames], valid[:num_frames]
    return values, valid


def write_va_annotations(path: str | os.PathLike, values, valid=None) -> None:
    """Write an annotation file (``-5,-5`` for invalid frames)."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.ones(len(values), bool) if valid is None else np.asarray(valid, bool)
    rows = [f"{v:.6g},{a:.6g}" if ok else "-5,-5" for (v, a), ok in zip(values, valid)]
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER + "\n" + "\n".join(rows) + "\n")


def _parse_pair(text: str) -> tuple[float, float] | None:
    parts = text.strip().split(",")
    if len(parts) != 2:
        return None
    try:
        pair = (float(parts[0]), float(parts[1]))
    except ValueError:
        return None
    return pair if all(math.isfinite(v) for v in pair) else None


def _short_list(items: list[int], limit: int = 8) -> str:
    head = ", ".join(str(i) for i in items[:limit])
    return head + (f", ... ({len(items)} in all)" if len(items) > limit else "")
