"""Training checkpoints: safetensors files written atomically, verified on load.

A checkpoint is a directory ``<out_dir>/checkpoints/<name>/`` (``last``,
``best``) holding

* ``model.safetensors``: the model weights (``maven_fast.load_weights`` reads it),
* ``train_state.safetensors``: optimizer tensors, RNG states; the rest of the
  state (step, epoch, scheduler, optimizer hyper-parameters, metrics) as JSON
  in its metadata,
* ``manifest.json``: SHA-256 and size of both files, the config, the step.

Writing: everything goes to ``<name>.tmp/`` first, then the old directory is
renamed to ``<name>.prev``, the new one into place, and ``.prev`` removed, so
a run killed at any moment leaves either the old or the new checkpoint
complete (``load`` falls back to ``.prev`` when ``<name>`` is missing).
Loading checks the manifest: a truncated or corrupted file raises
:class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or does not fit the model."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- state packing
def rng_state() -> dict[str, Any]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return {"tensors": tensors, "python": random.getstate()}


def restore_rng_state(tensors: dict[str, torch.Tensor], python_state: Any) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


def _pack_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain_state = {}, {}
    for idx, per_param in state_dict["state"].items():
        plain_state[str(idx)] = {}
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                plain_state[str(idx)][key] = {"tensor": f"optim.{idx}.{key}"}
            else:
                plain_state[str(idx)][key] = value
    return tensors, {"state": plain_state, "param_groups": state_dict["param_groups"]}


def _unpack_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for idx, per_param in meta["state"].items():
        state[int(idx)] = {
            k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v for k, v in per_param.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(
    directory: Path | str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    progress: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint to ``directory`` (e.g. ``.../checkpoints/last``)."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    prev = final.with_name(final.name + ".prev")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "maven_fast"})

    rng = rng_state()
    tensors = dict(rng["tensors"])
    meta: dict[str, Any] = {"progress": progress, "python_rng": rng["python"]}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _pack_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    save_file(tensors, str(tmp / STATE_FILE), metadata={"state": json.dumps(meta)})

    manifest = {
        "files": {name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                  for name in (MODEL_FILE, STATE_FILE)},
        "progress": progress,
        "config": config,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    for name in (MODEL_FILE, STATE_FILE, MANIFEST):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)

    shutil.rmtree(prev, ignore_errors=True)
    if final.exists():
        final.rename(prev)
    tmp.rename(final)
    _fsync_dir(final.parent)
    shutil.rmtree(prev, ignore_errors=True)
    return final


def resolve_checkpoint(path: Path | str) -> Path:
    """The checkpoint directory for ``path`` (a run dir, a checkpoint dir, or a .prev fallback)."""
    p = Path(path)
    if (p / "checkpoints" / "last").exists() or (p / "checkpoints" / "last.prev").exists():
        p = p / "checkpoints" / "last"
    if p.is_file() and p.name in (MODEL_FILE, STATE_FILE, MANIFEST):
        p = p.parent
    if not (p / MANIFEST).exists():
        prev = p.with_name(p.name + ".prev")
        if (prev / MANIFEST).exists():
            return prev
        raise CheckpointError(
            f"no checkpoint at {path}: expected a directory with {MANIFEST}, {MODEL_FILE} and {STATE_FILE} "
            "(e.g. runs/NAME/checkpoints/last) or a run directory"
        )
    return p


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with the layout of a manifest (None: nothing)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {MODEL_FILE, STATE_FILE}:
        return f"'files' must list exactly {MODEL_FILE} and {STATE_FILE}"
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and len(entry["sha256"]) == 64 and isinstance(entry.get("bytes"), int)
                and not isinstance(entry["bytes"], bool) and entry["bytes"] >= 0):
            return f"files.{name} must be {{sha256: 64 hex digits, bytes: integer >= 0}}"
    if not isinstance(manifest.get("config", {}), (dict, type(None))):
        return "'config' must be a mapping"
    return None


def verify_checkpoint(directory: Path | str) -> dict[str, Any]:
    """Checks every file against the manifest; returns the manifest."""
    d = resolve_checkpoint(directory)
    try:
        manifest = json.loads((d / MANIFEST).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSON, UTF-8, > 4300-digit numbers
        raise CheckpointError(f"{d / MANIFEST}: unreadable manifest ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]}); the checkpoint is corrupted") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise CheckpointError(f"{d / MANIFEST}: not a checkpoint manifest: {problem}; the checkpoint "
                              "is corrupted")
    for name, expected in manifest["files"].items():
        f = d / name
        if not f.exists():
            raise CheckpointError(f"{f}: missing; the checkpoint is incomplete")
        size = f.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{f}: {size} bytes but the manifest says {expected['bytes']}: truncated or replaced")
        if _sha256(f) != expected["sha256"]:
            raise CheckpointError(f"{f}: SHA-256 does not match the manifest: the file is corrupted")
    manifest["directory"] = str(d)
    return manifest


def load_model_weights(model: torch.nn.Module, directory: Path | str, strict: bool = True) -> dict[str, Any]:
    """Loads (verified) weights into ``model``; returns the manifest."""
    manifest = verify_checkpoint(directory)
    path = Path(manifest["directory"]) / MODEL_FILE
    try:
        weights = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors' errors: a file the manifest vouches for
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]})") from None
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shapes that differ from the model's
        raise CheckpointError(f"{path}: weights do not fit the model: {' '.join(str(exc).split())[:300]}; "
                              "was it trained with another model config?") from None
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{manifest['directory']}: weights do not fit the model: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}; was it trained with another model config?"
        )
    return manifest


def load_checkpoint(
    directory: Path | str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restores model, optimizer, scheduler and RNG; returns the saved progress dict."""
    manifest = load_model_weights(model, directory)
    path = Path(manifest["directory"]) / STATE_FILE
    from safetensors import safe_open

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["state"])
        progress = meta["progress"]
        if not (isinstance(progress, dict) and all(
                isinstance(progress.get(k), int) and not isinstance(progress[k], bool) and progress[k] >= 0
                for k in ("epoch", "step", "epoch_step"))):
            raise ValueError("progress must hold integers epoch, step, epoch_step >= 0")
        if optimizer is not None and "optimizer" in meta:
            optimizer.load_state_dict(_unpack_optimizer(tensors, meta["optimizer"]))
        if scheduler is not None and "scheduler" in meta:
            scheduler.load_state_dict(meta["scheduler"])
        if restore_rng:
            restore_rng_state(tensors, meta["python_rng"])
    except Exception as exc:  # noqa: BLE001 - whatever a damaged state file breaks, name the file
        raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]}); the checkpoint is corrupted, or was "
                              "written by another version") from None
    return progress
