"""Run the frozen encoders once over every segment and cache the features.

:func:`extract_features` walks the splits of an Aff-Wild2-shaped dataset
(:func:`~maven_fast.data.affwild2.build_split`), and for each annotated
person writes one safetensors shard with every segment's video frame
features, audio frame features, text token features (plus pooled audio and
text vectors for the reference presets), labels, masks and frame numbers.
See :mod:`maven_fast.data.cache_format` for the layout.

- Batched: video frames go through the video encoder ``frame_batch`` at a
  time (streamed from the file or frame folder, decoded ahead of the encoder
  in a background thread into a bounded queue: :mod:`maven_fast.data.pipeline`,
  the pipeline predict uses too); audio windows and texts of ``batch_size``
  segments at a time. Audio longer than ``max_audio_seconds`` is encoded in
  consecutive windows whose frame features are concatenated.
- Precision: the encoders compute in ``compute_dtype`` (``auto``: bf16 where
  the hardware is fast at it; :mod:`maven_fast.encoders.precision`), recorded
  in the cache's settings; resuming a cache made at another precision is
  refused with both named (``overwrite=True`` re-extracts it).
- Resumable: a shard under its final name is complete (atomic rename) and is
  skipped when its encoder signature matches; temporary files of a killed
  run are deleted and redone.
- Robust: a video that fails is recorded (``<split>/<name>.failed.json``,
  the returned result and the index) and the others go on.
- Distributed: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) each rank
  takes every ``WORLD_SIZE``-th video of the same sorted plan; no process
  group is needed. Whichever rank finishes last (when every planned video
  has a shard or a failure record) writes ``index.json``; re-running extract
  (which skips everything done) also writes it.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from maven_fast.data import cache_format as cf
from maven_fast.data.affwild2 import AffWild2Layout, VideoEntry, build_split
from maven_fast.data.report import DataError, Report
from maven_fast.encoders.precision import check_compute_dtype, recorded_compute_dtype
from maven_fast.data.pipeline import DEFAULT_PREFETCH, MIN_AUDIO_SAMPLES, StageTimes, encode_segments
from maven_fast.data.segmentation import Segment

__all__ = ["MIN_AUDIO_SAMPLES", "ExtractResult", "PlannedVideo", "extract_features", "write_index_if_complete"]


@dataclass
class PlannedVideo:
    """One annotated person to extract, or one that already failed while indexing."""

    split: str
    name: str
    entry: VideoEntry | None = None
    segments: list[Segment] | None = None
    failure: str | None = None


@dataclass
class ExtractResult:
    """What one extract run (one rank) did."""

    cache_dir: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    index_path: str | None = None
    report: Report = field(default_factory=Report)
    seconds: float = 0.0
    compute_dtype: str = "float32"
    timings: StageTimes = field(default_factory=StageTimes)


def dist_rank_world() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from torchrun's environment, ``(0, 1)`` without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def extract_features(data_root: str | os.PathLike | AffWild2Layout, cache_dir: str | os.PathLike,
                     encoders, *, splits: Iterable[str] = ("train", "val"),
                     mode: str = "contiguous", tail: bool = False,
                     test_list: str | os.PathLike | None = None, batch_size: int = 8,
                     frame_batch: int = 64, max_audio_seconds: float = 30.0,
                     frames_source: str = "auto", dtype: torch.dtype = torch.float32,
                     device: str | torch.device | None = None, rank: int | None = None,
                     world_size: int | None = None, overwrite: bool = False,
                     progress: bool = True, compute_dtype: str = "auto", channels_last: bool = True,
                     compile: bool | str = False, prefetch: int = DEFAULT_PREFETCH) -> ExtractResult:
    """Extract and cache features of every segment of ``splits``; see the module docstring.

    ``encoders``: an ``EncoderSet`` (``video``, ``audio``, ``text``,
    ``signature()``). ``test_list``: the organisers' list of test videos (or
    frame list), needed to extract the ``test`` split. ``frames_source``: ``auto`` (frame folder when present,
    else the video file), ``folder`` or ``video``. ``dtype``: storage type of
    the features. Returns what this rank wrote, skipped and failed.
    """
    began = time.perf_counter()
    if frames_source not in ("auto", "folder", "video"):
        raise ValueError(f"frames_source must be auto, folder or video, got {frames_source!r}")
    env_rank, env_world = dist_rank_world()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    cache = Path(cache_dir)
    if cf.utf8_file_stem(str(cache)) != str(cache):
        raise DataError(cache, "the cache folder's path is not UTF-8, and safetensors opens only "
                               "UTF-8 paths", fix="choose a CACHE_DIR whose path is UTF-8")
    result = ExtractResult(cache_dir=str(cache), report=Report())
    if device is None:
        device = _default_device()
    encoders = _to_device(encoders, device)
    encoders.configure(compute_dtype, channels_last=channels_last, compile=compile)
    result.compute_dtype = encoders.compute_dtype
    signature = _json_safe(encoders.signature())
    settings = {"mode": mode, "tail": tail, "frames_source": frames_source,
                "max_audio_seconds": max_audio_seconds, "dtype": str(dtype).replace("torch.", ""),
                "sample_rate": int(encoders.audio.sample_rate), "compute_dtype": encoders.compute_dtype}
    _check_meta(cache, signature, settings, overwrite, rank)

    layout = data_root if isinstance(data_root, AffWild2Layout) else AffWild2Layout.discover(data_root)
    plan: list[PlannedVideo] = []
    for split in splits:
        index = build_split(layout, split, mode=mode, tail=tail,
                            test_list=test_list if split == "test" else None,
                            sample_rate=int(encoders.audio.sample_rate), report=result.report)
        plan += [PlannedVideo(split, e.name, e, index.segments[e.name]) for e in index.videos]
        plan += [PlannedVideo(split, name, failure=why) for name, why in index.failed.items()]
    plan.sort(key=lambda item: (item.split, item.name))
    mine = plan[rank::world_size]

    bar = _progress(len(mine), rank, world_size, progress)
    for item in mine:
        split, name = item.split, item.name
        key = f"{split}/{name}"
        bar.set_postfix_str(name, refresh=False)
        final = cf.shard_path(cache, split, name)
        cf.remove_stale_temps(final)
        cf.remove_stale_temps(cf.failure_path(cache, split, name))
        if item.failure is not None:
            _record_failure(cache, split, name, item.failure, result)
        elif not overwrite and _shard_is_current(final, signature, settings):
            result.skipped.append(key)
        else:
            video_report = Report()
            try:
                _extract_video(item.entry, item.segments, encoders, final, signature, settings,
                               batch_size, frame_batch, max_audio_seconds, frames_source, dtype,
                               video_report, prefetch, result.timings)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # noqa: BLE001 - one bad video must not stop the others
                reason = str(err) if isinstance(err, DataError) else \
                    f"{type(err).__name__}: {err} ({_where(err)})"
                result.report.extend(video_report)
                result.report.add(key, f"extraction failed: {reason}")
                _record_failure(cache, split, name, reason, result)
            else:
                result.report.extend(video_report)
                cf.failure_path(cache, split, name).unlink(missing_ok=True)
                result.written.append(key)
        bar.update(1)
    bar.close()
    result.index_path = write_index_if_complete(cache, plan)
    result.seconds = time.perf_counter() - began
    return result


# ------------------------------------------------------------------ one video
def _extract_video(entry: VideoEntry, segments: list[Segment], encoders, final: Path,
                   signature, settings, batch_size, frame_batch, max_audio_seconds,
                   frames_source, dtype, report: Report, prefetch: int = DEFAULT_PREFETCH,
                   timings: StageTimes | None = None) -> None:
    from safetensors.torch import save_file

    from maven_fast.data.audio import AudioReader

    timings = timings if timings is not None else StageTimes()
    values, valid = entry.labels(report)
    kept = [s for s in segments if s.num_frames > 0]
    skipped = [s.to_dict() for s in segments if s.num_frames == 0]
    tensors: dict[str, torch.Tensor] = {}
    frames = _frame_source(entry, frames_source, report)
    audio = AudioReader(entry.audio_path, encoders.audio.sample_rate, report=report) \
        if entry.audio_path else None
    try:
        for group in encode_segments(frames, audio, kept, encoders, batch_size=batch_size,
                                     frame_batch=frame_batch, max_audio_seconds=max_audio_seconds,
                                     prefetch=prefetch, timings=timings):
            for feats in group:
                seg = feats.segment
                k = f"{seg.index:04d}"
                label_valid = valid[seg.frame_start: seg.frame_stop]
                present = feats.present
                tensors[f"{k}/video"] = feats.video.to(dtype)
                tensors[f"{k}/labels"] = values[seg.frame_start: seg.frame_stop].float().contiguous()
                tensors[f"{k}/label_valid"] = label_valid.contiguous()
                tensors[f"{k}/present"] = present
                tensors[f"{k}/mask"] = label_valid & present
                tensors[f"{k}/frames"] = torch.arange(seg.frame_start + 1, seg.frame_stop + 1)
                tensors[f"{k}/audio"] = feats.audio.to(dtype)
                tensors[f"{k}/audio_pooled"] = feats.audio_pooled.to(dtype)
                tensors[f"{k}/text"] = feats.text.to(dtype)
                tensors[f"{k}/text_pooled"] = feats.text_pooled.to(dtype)
    finally:
        if audio is not None:
            audio.close()
        if hasattr(frames, "close"):
            frames.close()
    if not kept:
        raise DataError(entry.transcript_path or entry.name, "no segment spans a video frame",
                        fix="check the transcript's times against the video")
    began = time.perf_counter()
    metadata = {"format": cf.CACHE_FORMAT, "signature": json.dumps(signature),
                "settings": json.dumps(settings), "entry": json.dumps(entry.to_dict()),
                "segments": json.dumps([{**s.to_dict(), "key": f"{s.index:04d}",
                                         "num_audio_frames": int(tensors[f"{s.index:04d}/audio"].shape[0]),
                                         "num_text_tokens": int(tensors[f"{s.index:04d}/text"].shape[0])}
                                        for s in kept]),
                "skipped_segments": json.dumps(skipped),
                "issues": cf.utf8_json(report.to_list())}  # paths may hold surrogates
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = cf.temp_name(final)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, final)
    timings.add("write", time.perf_counter() - began)


def _frame_source(entry: VideoEntry, frames_source: str, report: Report):
    from maven_fast.data.frames import FrameFolder
    from maven_fast.data.media import VideoReader

    use_folder = entry.frames_dir is not None and frames_source in ("auto", "folder")
    if frames_source == "folder" and entry.frames_dir is None:
        raise DataError(entry.name, "no frame folder (frames_source='folder')",
                        fix="extract the frames, or use frames_source='auto'")
    if use_folder:
        return FrameFolder(entry.frames_dir, report=report)
    if entry.video_path is None:
        raise DataError(entry.name, "no video file to read frames from",
                        fix="give the video or a frame folder")
    return VideoReader(entry.video_path, report=report)


# ------------------------------------------------------------- cache bookkeeping
def _check_meta(cache: Path, signature, settings, overwrite: bool, rank: int) -> None:
    meta_path = cache / cf.META_FILE
    meta = {"format": cf.CACHE_FORMAT, "signature": signature, "settings": settings}
    if meta_path.is_file() and not overwrite:
        old = cf.read_json(meta_path)
        old_settings = _with_compute_dtype(old.get("settings"))
        check_compute_dtype(old_settings.get("compute_dtype"), settings["compute_dtype"],
                            have_what=f"the cache {cache}", want_what="this extract run",
                            override="--overwrite (overwrite=True) to re-extract the whole cache at "
                                     f"{settings['compute_dtype']}")
        if old.get("signature") != signature or old_settings != settings:
            raise DataError(meta_path, "this cache was built with other encoders or settings: "
                                       f"{json.dumps({k: old.get(k) for k in ('signature', 'settings')})}; "
                                       f"now {json.dumps({'signature': signature, 'settings': settings})}",
                            fix="use another CACHE_DIR, or pass overwrite=True (--overwrite) to rebuild it")
    cache.mkdir(parents=True, exist_ok=True)
    if overwrite and rank == 0:
        (cache / cf.INDEX_FILE).unlink(missing_ok=True)
    cf.write_json_atomic(meta_path, meta)


def _shard_is_current(path: Path, signature, settings) -> bool:
    if not path.is_file():
        return False
    header = cf.read_shard_header(path)
    return header is not None and header.get("signature") == signature and \
        _with_compute_dtype(header.get("settings")) == settings


def _with_compute_dtype(settings):
    """Settings of a cache made before ``compute_dtype`` existed: its encoders ran in fp32."""
    if isinstance(settings, dict) and "compute_dtype" not in settings:
        return {**settings, "compute_dtype": recorded_compute_dtype(None)}
    return settings


def _record_failure(cache: Path, split: str, name: str, reason: str, result: ExtractResult) -> None:
    """Write the failure record; a shard left from an earlier run no longer matches the data."""
    result.failed[f"{split}/{name}"] = reason
    cf.shard_path(cache, split, name).unlink(missing_ok=True)
    cf.write_json_atomic(cf.failure_path(cache, split, name), {"name": name, "split": split,
                                                               "reason": reason})


def write_index_if_complete(cache: str | os.PathLike, plan: list[PlannedVideo]) -> str | None:
    """Write ``index.json`` if every planned video has a shard or a failure record."""
    cache = Path(cache)
    meta = cf.read_json(cache / cf.META_FILE)
    try:
        cf._need(isinstance(meta, dict), "meta.json", "expected a JSON object")
        cf._need(meta.get("format") == cf.CACHE_FORMAT, "meta.json",
                 f"format {meta.get('format')!r}, expected {cf.CACHE_FORMAT!r}")
        cf.check_signature(meta.get("signature"))
    except cf.CacheFormatError as err:
        raise DataError(cache / cf.META_FILE, f"not a cache description: {err}",
                        fix="delete the cache folder and run `maven-fast extract` again") from None
    splits: dict[str, dict[str, Any]] = {}
    for item in plan:
        split, name = item.split, item.name
        part = splits.setdefault(split, {"videos": [], "failed": []})
        shard = cf.shard_path(cache, split, name)
        header = cf.read_shard_header(shard) if shard.is_file() else None
        failed = cf.failure_path(cache, split, name)
        if header is not None and header.get("signature") == meta["signature"]:
            e = header["entry"]
            part["videos"].append({"name": name, "video": e["video"], "fps": e["fps"],
                                   "num_frames": e["num_frames"],
                                   "shard": str(shard.relative_to(cache)),
                                   "segments": header["segments"],
                                   "skipped_segments": header["skipped_segments"],
                                   "issues": len(header["issues"])})
        elif failed.is_file():
            part["failed"].append(cf.read_json(failed))
        else:
            return None  # another rank is still working on it
    index = {**meta, "splits": splits,
             "failed": [f for part in splits.values() for f in part["failed"]]}
    path = cache / cf.INDEX_FILE
    cf.write_json_atomic(path, index)
    return str(path)


# ------------------------------------------------------------------- helpers
def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _to_device(encoders, device):
    for part in (encoders.video, encoders.audio, encoders.text):
        part.to(device)
    return encoders


def _progress(total: int, rank: int, world: int, enabled: bool):
    from tqdm.auto import tqdm

    desc = "extract" if world == 1 else f"extract [rank {rank}/{world}]"
    return tqdm(total=total, desc=desc, unit="video", disable=not enabled, position=rank,
                dynamic_ncols=True)


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def _where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "no traceback"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"
