"""Files written for one predicted video.

* ``<stem>.segments.csv``: ``file,start_s,end_s,text,valence,arousal``, one row
  per transcript segment, the mean over its frames (empty values for a
  segment that spans no frame);
* ``<stem>.frames.csv``: ``file,frame,time_s,valence,arousal``, one row per
  video frame (1-based frame numbers, ``time_s = (frame - 1) / fps``; empty
  values on frames no segment covers);
* ``<stem>.png`` (optional): valence/arousal over time with the segments
  shaded, and the trajectory on the circumplex
  (:func:`maven_fast.predict.plot.plot_predictions`).

The CSVs are UTF-8. The undecodable bytes of a file name (Python's ``\\udcff``,
which has no UTF-8 form) are written as that escape.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from maven_fast.predict.runner import VideoPrediction

SEGMENT_COLUMNS = ("file", "start_s", "end_s", "text", "valence", "arousal")
FRAME_COLUMNS = ("file", "frame", "time_s", "valence", "arousal")


def number(value: float, digits: int = 6) -> str:
    """A compact decimal (``10.5``, ``0``, ``-0.123457``); empty for NaN."""
    if math.isnan(value):
        return ""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def output_paths(video: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where the files of ``video`` go: ``segments``, ``frames`` and ``plot``."""
    stem, out = Path(video).stem, Path(out_dir)
    return {"segments": out / f"{stem}.segments.csv", "frames": out / f"{stem}.frames.csv",
            "plot": out / f"{stem}.png"}


def write_segments_csv(path: str | os.PathLike, prediction: VideoPrediction) -> Path:
    name = Path(prediction.video).name
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f)
        writer.writerow(SEGMENT_COLUMNS)
        for s in prediction.segments:
            writer.writerow([name, number(s.start_s), number(s.end_s), s.text, number(s.valence),
                             number(s.arousal)])
    return Path(path)


def write_frames_csv(path: str | os.PathLike, prediction: VideoPrediction) -> Path:
    name = Path(prediction.video).name
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f)
        writer.writerow(FRAME_COLUMNS)
        for frame, t, v, a in zip(prediction.frames.tolist(), prediction.times_s.tolist(),
                                  prediction.valence.tolist(), prediction.arousal.tolist()):
            writer.writerow([name, frame, number(t), number(v), number(a)])
    return Path(path)


def write_prediction(prediction: VideoPrediction, out_dir: str | os.PathLike, plot: bool = False
                     ) -> dict[str, Path]:
    """Write the CSV files (and the PNG with ``plot``) of one video; returns their paths."""
    paths = output_paths(prediction.video, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = {"segments": write_segments_csv(paths["segments"], prediction),
               "frames": write_frames_csv(paths["frames"], prediction)}
    if plot:
        from maven_fast.predict.plot import plot_predictions

        spans = [(s.start_s, s.end_s, s.text) for s in prediction.segments]
        written["plot"] = plot_predictions(paths["plot"], prediction.times_s, prediction.valence,
                                           prediction.arousal, title=Path(prediction.video).name,
                                           segments=spans)
    return written
