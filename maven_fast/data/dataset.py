"""Training data from the feature cache: a Dataset of segments and a padding collate.

>>> ds = FeatureCacheDataset("cache", "train")                 # paper preset: sequences
>>> loader = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate_segments)
>>> batch = next(iter(loader))
>>> out = model(batch["video"], batch["audio"], batch["text"], video_lengths=batch["video_lengths"],
...             audio_lengths=batch["audio_lengths"], text_lengths=batch["text_lengths"])

With ``pooled=True`` (reference presets) ``audio`` and ``text`` are one
vector per segment, ``[B, Da]`` and ``[B, Dt]``, and their lengths are None.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from maven_fast.data import cache_format as cf
from maven_fast.data.report import DataError


@dataclass(frozen=True)
class CachedSegment:
    """Where one item of the dataset lives: a shard, a segment key, a frame window."""

    shard: str
    key: str
    name: str
    segment: dict
    window: tuple[int, int]  # frame offsets inside the segment


class FeatureCacheDataset(Dataset):
    """Segments of one split of a feature cache written by ``maven-fast extract``.

    Each item is a dict: ``video [Tv, Dv]``, ``audio [Ta, Da]`` (or ``[Da]``
    pooled), ``text [Tt, Dt]`` (or ``[Dt]``), ``labels [Tv, 2]``, ``mask [Tv]``
    (label valid, and, unless ``mask_missing_images=False``, image present),
    ``frames [Tv]`` (1-based frame numbers), ``name``, ``segment``, ``start``,
    ``end``, ``text_str``.

    ``max_frames`` cuts longer segments into consecutive windows of at most
    that many frames (audio frames cut in proportion; the text, and pooled
    vectors, stay the segment's). ``expect_signature`` raises if the cache was
    built with other encoders.
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str, *, pooled: bool = False,
                 mask_missing_images: bool = True, max_frames: int | None = None,
                 dtype: torch.dtype = torch.float32, expect_signature: dict | None = None):
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / cf.INDEX_FILE
        if not index_path.is_file():
            raise DataError(index_path, "feature cache index not found (extraction not run, or "
                                        "not finished on every rank)",
                            fix="run `maven-fast extract DATA_ROOT CACHE_DIR` again; it skips "
                                "finished videos and writes the index")
        self.index = cf.read_json(index_path)
        fix = ("delete index.json and run `maven-fast extract` again: it rewrites the index from "
               "the shards (and re-extracts damaged ones)")
        try:
            cf.check_index(self.index, split)
        except cf.CacheFormatError as err:
            raise DataError(index_path, f"not a feature cache index: {err}", fix=fix) from None
        if expect_signature is not None and self.index.get("signature") != expect_signature:
            raise DataError(index_path, f"cache built with encoders {self.index.get('signature')}, "
                                        f"expected {expect_signature}",
                            fix="re-extract with the encoders the model expects")
        if split not in self.index["splits"]:
            raise DataError(index_path, f"the cache has no split {split!r} "
                                        f"(it has {sorted(self.index['splits'])})",
                            fix=f"extract it: maven-fast extract ... --splits {split}")
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be positive")
        self.split, self.pooled, self.dtype = split, pooled, dtype
        self.mask_missing_images = mask_missing_images
        # One entry per segment and the running count of its windows: item i is found by bisection,
        # so building the dataset costs the number of segments, never the number of windows (an
        # index whose frame counts are huge must not make max_frames=1 build billions of items).
        self._segments: list[tuple[str, str, dict]] = []
        self._ends: list[int] = []
        self._max_frames = max_frames
        total = 0
        for i, video in enumerate(self.index["splits"][split]["videos"]):
            shard = str(self.cache_dir / video["shard"])
            if not os.path.isfile(shard):
                raise DataError(index_path, f"splits.{split}.videos[{i}]: shard {video['shard']!r} "
                                            "not found", fix=fix)
            for seg in video["segments"]:
                n = seg["frame_stop"] - seg["frame_start"]
                windows = -(-n // max_frames) if max_frames else (1 if n > 0 else 0)
                if windows:
                    total += windows
                    self._segments.append((shard, video["name"], seg))
                    self._ends.append(total)
        self._open: tuple[str, Any, set[str]] | None = None

    @property
    def signature(self) -> dict:
        return self.index["signature"]

    @property
    def failed(self) -> list[dict]:
        return self.index["splits"][self.split]["failed"]

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def item(self, i: int) -> CachedSegment:
        """Where item ``i`` lives: its shard, segment and frame window."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of a dataset of {len(self)}")
        j = bisect.bisect_right(self._ends, i)
        shard, name, seg = self._segments[j]
        n = seg["frame_stop"] - seg["frame_start"]
        step = self._max_frames or n
        a = (i - (self._ends[j - 1] if j else 0)) * step
        return CachedSegment(shard, seg["key"], name, seg, (a, min(n, a + step)))

    def _shard(self, path: str):
        from safetensors import safe_open

        if self._open is None or self._open[0] != path:
            f = safe_open(path, framework="pt")
            self._open = (path, f, set(f.keys()))
        return self._open[1], self._open[2]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.item(i)
        try:
            f, keys = self._shard(item.shard)
            cf.check_shard_tensors(f, [item.segment], self.signature, keys)
            return self._read(f, item)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged shard: name it, whatever broke
            self._open = None
            raise DataError(item.shard, f"segment {item.key!r} cannot be read: "
                                        f"{type(err).__name__}: {str(err)[:200]}",
                            fix="delete the shard and index.json, then run `maven-fast extract` "
                                "again (it re-extracts missing shards)") from None

    def _read(self, f, item: CachedSegment) -> dict[str, Any]:
        k, (a, b) = item.key, item.window

        def get(name: str, sl: slice | None = None) -> torch.Tensor:
            return f.get_slice(f"{k}/{name}")[sl] if sl is not None else f.get_tensor(f"{k}/{name}")

        frames = slice(a, b)
        total = item.segment["frame_stop"] - item.segment["frame_start"]
        out = {
            "video": get("video", frames).to(self.dtype),
            "labels": get("labels", frames).float(),
            "mask": get("mask" if self.mask_missing_images else "label_valid", frames).bool(),
            "frames": get("frames", frames).long(),
            "name": item.name, "segment": int(item.segment["index"]),
            "start": float(item.segment["start"]), "end": float(item.segment["end"]),
            "text_str": item.segment["text"],
        }
        if self.pooled:
            out["audio"] = get("audio_pooled").to(self.dtype)
            out["text"] = get("text_pooled").to(self.dtype)
        else:
            n_audio = int(item.segment["num_audio_frames"])
            a0 = a * n_audio // total  # the window's share of the audio frames
            a1 = n_audio if b == total else max(a0 + 1, b * n_audio // total)
            out["audio"] = get("audio", slice(a0, a1)).to(self.dtype)
            out["text"] = get("text").to(self.dtype)
        return out


def _pad(seqs: list[torch.Tensor], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    out = seqs[0].new_full((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), value)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, lengths


def collate_segments(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of dataset items into a batch.

    Returns ``video [B, Tv, Dv]``, ``video_lengths [B]``, ``labels [B, Tv, 2]``,
    ``mask [B, Tv]`` (False on padding), ``frames [B, Tv]`` (-1 on padding),
    ``audio [B, Ta, Da]`` + ``audio_lengths`` and ``text [B, Tt, Dt]`` +
    ``text_lengths`` for sequences, or ``audio [B, Da]``, ``text [B, Dt]``
    with ``audio_lengths = text_lengths = None`` for pooled items; plus
    ``names``, ``segments``, ``start``, ``end``, ``texts``.
    """
    if not batch:
        raise ValueError("collate_segments got an empty batch")
    video, video_lengths = _pad([b["video"] for b in batch])
    labels, _ = _pad([b["labels"] for b in batch])
    mask, _ = _pad([b["mask"] for b in batch], False)
    frames, _ = _pad([b["frames"] for b in batch], -1)
    out: dict[str, Any] = {"video": video, "video_lengths": video_lengths, "labels": labels,
                           "mask": mask, "frames": frames}
    for name in ("audio", "text"):
        items = [b[name] for b in batch]
        if items[0].ndim == 1:
            out[name], out[f"{name}_lengths"] = torch.stack(items), None
        else:
            out[name], out[f"{name}_lengths"] = _pad(items)
    out["names"] = [b["name"] for b in batch]
    out["segments"] = torch.tensor([b["segment"] for b in batch])
    out["start"] = torch.tensor([b["start"] for b in batch], dtype=torch.float64)
    out["end"] = torch.tensor([b["end"] for b in batch], dtype=torch.float64)
    out["texts"] = [b["text_str"] for b in batch]
    return out
