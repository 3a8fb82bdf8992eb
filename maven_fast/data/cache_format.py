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


def utf8_file_stem(name: str) -> str:
    """``name`` as a file name safetensors can open: it only takes UTF-8 paths, and a video
    file name with undecodable bytes arrives as surrogates (``clip-\\udcff``); those bytes are
    written as ``\\xff`` (``clip-\\xff``)."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def shard_path(cache_dir: str | os.PathLike, split: str, name: str) -> Path:
    return Path(cache_dir) / split / f"{utf8_file_stem(name)}{SHARD_SUFFIX}"


def failure_path(cache_dir: str | os.PathLike, split: str, name: str) -> Path:
    return Path(cache_dir) / split / f"{utf8_file_stem(name)}{FAILED_SUFFIX}"


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


def utf8_json(data: Any, **dumps_kwargs) -> str:
    """``json.dumps(data)`` with non-ASCII text kept as is, in a form UTF-8 can encode (files,
    safetensors metadata): a lone surrogate (undecodable bytes of a file name under
    surrogateescape, or a "\\ud800" escape read from JSON) has no UTF-8 form, so it is written
    as JSON's \\uXXXX escape, which only occurs inside strings and reads back as the same string."""
    text = json.dumps(data, ensure_ascii=False, **dumps_kwargs)
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as UTF-8 JSON through a temporary file and a rename: readers see the
    old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.write_bytes(utf8_json(data, indent=1).encode("utf-8"))
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file of the cache; unreadable or not JSON: :class:`DataError` naming the file
    (and the line of a syntax error)."""
    from maven_fast.data.report import DataError

    fix = "the cache writes this file itself: delete it and run `maven-fast extract` again"
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise DataError(path, f"cannot read the file: {err.strerror or err}", fix=fix) from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 ({err.reason} at byte {err.start})", fix=fix) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err.msg} (column {err.colno})", line=err.lineno,
                        fix=fix) from None
    except (ValueError, RecursionError) as err:  # a number of > 4300 digits; nesting too deep
        raise DataError(path, f"unreadable JSON: {type(err).__name__}: {str(err)[:80]}",
                        fix=fix) from None


# ------------------------------------------------------------------ checks of what was read
class CacheFormatError(ValueError):
    """A cache file's content does not have the layout this module writes (internal: the
    readers turn it into a DataError naming the file)."""


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise CacheFormatError(f"{where}: {what}")


def _is_int(v, lo: int = 0, hi: int = 10**12) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_number(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e15 and math.isfinite(v)


def check_signature(sig: Any, where: str = "signature") -> None:
    """``{"video": {"name": str, "dim": int}, "audio": ..., "text": ...}``."""
    _need(isinstance(sig, dict), where, "expected a mapping of video, audio and text encoders")
    for m in ("video", "audio", "text"):
        enc = sig.get(m)
        _need(isinstance(enc, dict) and _is_int(enc.get("dim"), 1, 1 << 20)
              and isinstance(enc.get("name"), str), f"{where}.{m}", "expected {name: str, dim: int >= 1}")


def check_segment(seg: Any, where: str) -> None:
    """A cached segment's record: its key, frame range, times, text and sequence lengths."""
    _need(isinstance(seg, dict), where, "expected a mapping")
    _need(isinstance(seg.get("key"), str) and 0 < len(seg["key"]) <= 32 and "/" not in seg["key"],
          f"{where}.key", "expected a tensor key such as '0003'")
    for k in ("index", "frame_start", "frame_stop", "num_audio_frames", "num_text_tokens"):
        _need(_is_int(seg.get(k)), f"{where}.{k}", f"expected an integer >= 0, got {_short(seg.get(k))}")
    _need(seg["frame_start"] <= seg["frame_stop"], f"{where}.frame_stop", "is before frame_start")
    for k in ("start", "end"):
        _need(_is_number(seg.get(k)), f"{where}.{k}", f"expected a finite number, got {_short(seg.get(k))}")
    _need(isinstance(seg.get("text"), str), f"{where}.text", "expected a string")


def check_video(video: Any, where: str) -> None:
    """A video's record in ``index.json``."""
    _need(isinstance(video, dict), where, "expected a mapping")
    _need(isinstance(video.get("name"), str), f"{where}.name", "expected a string")
    shard = video.get("shard")
    _need(isinstance(shard, str) and shard.endswith(SHARD_SUFFIX) and "\x00" not in shard
          and not Path(shard).is_absolute() and ".." not in Path(shard).parts,
          f"{where}.shard", f"expected a shard path inside the cache, got {_short(shard)}")
    _need(isinstance(video.get("segments"), list), f"{where}.segments", "expected a list")
    for i, seg in enumerate(video["segments"]):
        check_segment(seg, f"{where}.segments[{i}]")


def check_index(index: Any, split: str | None = None) -> None:
    """``index.json``: the signature, and the videos of ``split`` (every split when None)."""
    _need(isinstance(index, dict), "index", "expected a JSON object")
    check_signature(index.get("signature"))
    splits = index.get("splits")
    _need(isinstance(splits, dict), "splits", "expected a mapping of splits")
    for name, part in splits.items():
        if split is not None and name != split:
            continue
        where = f"splits.{name}"
        _need(isinstance(part, dict) and isinstance(part.get("videos"), list)
              and isinstance(part.get("failed"), list), where, "expected {videos: [...], failed: [...]}")
        for i, video in enumerate(part["videos"]):
            check_video(video, f"{where}.videos[{i}]")


#: Per segment key: the tensors of a shard and the shape rule of each (n = the segment's
#: frames, a = its audio frames, t = its text tokens, D* = the encoder widths).
def expected_shapes(seg: dict, sig: dict) -> dict[str, tuple[int, ...]]:
    n, k = seg["frame_stop"] - seg["frame_start"], seg["key"]
    dv, da, dt = (sig[m]["dim"] for m in ("video", "audio", "text"))
    return {f"{k}/video": (n, dv), f"{k}/labels": (n, 2), f"{k}/label_valid": (n,),
            f"{k}/present": (n,), f"{k}/mask": (n,), f"{k}/frames": (n,),
            f"{k}/audio": (seg["num_audio_frames"], da), f"{k}/audio_pooled": (da,),
            f"{k}/text": (seg["num_text_tokens"], dt), f"{k}/text_pooled": (dt,)}


def check_shard_tensors(f, segments: list[dict], sig: dict, keys: set[str] | None = None) -> None:
    """Every tensor of every segment is in the open shard ``f`` (whose tensor names are
    ``keys``, when known) with its expected shape."""
    keys = set(f.keys()) if keys is None else keys
    for seg in segments:
        for name, shape in expected_shapes(seg, sig).items():
            _need(name in keys, name, "missing from the shard")
            got = tuple(f.get_slice(name).get_shape())
            _need(got == shape, name, f"has shape {list(got)}, the metadata says {list(shape)}")


def _short(value: Any) -> str:
    from maven_fast.config import short_repr

    return short_repr(value, 40)


def read_shard_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """A shard's metadata (JSON fields decoded), or None if it is not a complete, consistent
    shard of this cache format (unreadable, another format, metadata with another layout,
    or tensors that do not match it): such a shard is extracted again."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            if raw.get("format") != CACHE_FORMAT:
                return None
            header = {k: (json.loads(v) if k != "format" else v) for k, v in raw.items()}
            check_signature(header.get("signature"))
            entry = header.get("entry")
            _need(isinstance(entry, dict) and isinstance(entry.get("video"), str)
                  and isinstance(entry.get("fps"), str) and _is_int(entry.get("num_frames")),
                  "entry", "expected {video, fps, num_frames}")
            segments = header.get("segments")
            _need(isinstance(segments, list), "segments", "expected a list")
            for i, seg in enumerate(segments):
                check_segment(seg, f"segments[{i}]")
            _need(len({seg["key"] for seg in segments}) == len(segments), "segments", "repeated key")
            _need(isinstance(header.get("skipped_segments"), list)
                  and isinstance(header.get("issues"), list), "metadata", "expected lists")
            check_shard_tensors(f, segments, header["signature"])
    except Exception:  # noqa: BLE001 - any unreadable or inconsistent file is "not a complete shard"
        return None
    return header
