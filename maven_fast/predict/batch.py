"""Predict many videos: pair them with transcripts, go on past bad ones, write a report.

One bad video (corrupt file, unusable transcript) never stops the others: it
is recorded with the reason and listed at the end. ``<out>/predict_report.json``
holds, per video, the status, the files written, the frame and segment
counts, and every issue reported (e.g. a transcript longer than its video).
"""
from __future__ import annotations

import os
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maven_fast.config import ConfigError
from maven_fast.data import DataError
from maven_fast.data.cache_format import write_json_atomic
from maven_fast.predict.outputs import write_prediction

REPORT_FILE = "predict_report.json"


@dataclass
class BatchResult:
    """What a :func:`predict_files` run did."""

    out_dir: str
    done: dict[str, dict[str, str]] = field(default_factory=dict)    # video -> {kind: path}
    failed: dict[str, str] = field(default_factory=dict)             # video -> reason
    issues: dict[str, list[str]] = field(default_factory=dict)       # video -> reported problems
    report_path: str = ""


def pair_transcripts(videos: list[str], transcripts: list[str]) -> list[tuple[str, str]]:
    """One transcript per video (same order), or one for all; anything else is an error."""
    if not videos:
        raise ConfigError("no video given: maven-fast predict VIDEO [VIDEO ...] --transcript FILE")
    if len(transcripts) == len(videos):
        return list(zip(videos, transcripts))
    if len(transcripts) == 1:
        return [(v, transcripts[0]) for v in videos]
    raise ConfigError(
        f"--transcript: {len(videos)} video(s) but {len(transcripts)} transcript(s); give one --transcript "
        "per video, in the same order as the videos, or a single one used for every video"
    )


def check_unique_stems(videos: list[str]) -> None:
    """Outputs are named after the video's stem: two videos with one stem would overwrite each other."""
    seen: dict[str, str] = {}
    for video in videos:
        stem = Path(video).stem
        if stem in seen and os.path.abspath(seen[stem]) != os.path.abspath(video):
            raise ConfigError(f"{seen[stem]} and {video} share the name {stem!r}, so their outputs "
                              f"({stem}.segments.csv, ...) would overwrite each other; predict them into "
                              "different --out folders")
        seen[stem] = video


def predict_files(predictor, pairs: list[tuple[str, str]], out_dir: str | os.PathLike, *, plot: bool = False,
                  progress: bool = True) -> BatchResult:
    """Predict each (video, transcript) pair with ``predictor`` and write its files under ``out_dir``."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = BatchResult(out_dir=str(out))
    rows: list[dict[str, Any]] = []
    bar = tqdm(pairs, desc="predict", unit="video", disable=not progress, dynamic_ncols=True)
    for video, transcript in bar:
        bar.set_postfix_str(Path(video).name, refresh=False)
        row: dict[str, Any] = {"video": str(video), "transcript": str(transcript)}
        try:
            prediction = predictor.predict(video, transcript, progress=progress)
            paths = write_prediction(prediction, out, plot=plot)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - one bad video must not stop the others
            reason = str(err) if isinstance(err, DataError) else f"{type(err).__name__}: {err} ({_where(err)})"
            result.failed[str(video)] = reason
            row.update(status="failed", reason=reason)
        else:
            result.done[str(video)] = {k: str(p) for k, p in paths.items()}
            result.issues[str(video)] = prediction.report.lines()
            row.update(status="ok", outputs=result.done[str(video)], frames=prediction.num_frames,
                       frames_predicted=int(prediction.covered.sum()), segments=len(prediction.segments),
                       issues=prediction.report.lines())
        rows.append(row)
    bar.close()
    report = {"checkpoint": predictor.checkpoint, "settings": asdict(predictor.settings),
              "encoders": predictor.encoders.signature(), "compute_dtype": predictor.encoders.compute_dtype,
              "videos": rows}
    result.report_path = str(out / REPORT_FILE)
    write_json_atomic(result.report_path, report)
    return result


def _where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "no traceback"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"
