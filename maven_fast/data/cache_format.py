"""The feature cache on disk: names, atomic writes, shard headers and the index.

Layout of ``CACHE_DIR``::

    meta.json                      encoder signature + segmentation options (checked on resume)
    index.json                     written once every planned video has a shard or a failure
    <split>/<name>.safetensors     one shard per annotated person (all its segments)
    <split>/<name>.failed.json     why a video could not be extracted (removed on success)

A shard holds, per kept segment ``KKKK`` (4-digit position in the video):
``KKKK/video [Tv, Dv]``, ``KKKK/audio [Ta, Da]``, ``KKKK/text [Tt, Dt]``,
``KKKK/audio_pooled [Da]``, ``KKKK/text_pooled [Dt]``, ``KKKK/labels [Tv, 2]``
float32, ``KKKK/mask [Tv]`` (label valid and image present),
``KKKK/label_valid [Tv]``, ``KKKK/present [Tv]`` bool and ``KKKK/frames [Tv]``
int64 (1-based frame numbers); its string metadata holds the JSON of the
video entry, the segments and the issues met.

Every file is written to a temporary name in the same folder and renamed
into place, so a shard under its final name is always complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CACHE_FORMAT = "maven_fast.cache/1"
META_FILE = "meta.json"
INDEX_FILE = "index.json"
SHARD_SUFFIX = ".safetensors"
FAILED_SUFFIX = ".failed.json"
TMP_MARK = ".tmp-"


def shard_path(cache_dir: str | os.PathLike, split: str, name: str) -> Path:
    return Path(cache_dir) / split / f"{name}{SHARD_SUFFIX}"


def failure_path(cache_dir: str | os.PathLike, split: str, name: str) -> Path:
    return Path(cache_dir) / split / f"{name}{FAILED_SUFFIX}"


def temp_name(final: Path) -> Path:
    """A temporary name next to ``final``, unique to this process."""
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")


def remove_stale_temps(final: Path) -> int:
    """Delete temporary files left for ``final`` by a killed run; returns how many."""
    count = 0
    if final.parent.is_dir():
        for p in final.parent.glob(f"{final.name}{TMP_MARK}*"):
            p.unlink(missing_ok=True)
            count += 1
    return count


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_shard_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """A shard's metadata (JSON fields decoded), or None if it is not a readable shard."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception:  # noqa: BLE001 - any unreadable file is "not a complete shard"
        return None
    if raw.get("format") != CACHE_FORMAT:
        return None
    return {k: (json.loads(v) if k != "format" else v) for k, v in raw.items()}
