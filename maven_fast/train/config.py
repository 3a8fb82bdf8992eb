"""Training configuration: one YAML file (model + data + optimisation + run),
``key=value`` overrides on the command line.

Defaults follow the original MAVEN training script: Adam, lr 1e-4, weight
decay 1e-4, ReduceLROnPlateau(factor 0.1, patience 5) on the validation loss,
gradient clipping at 1.0, batch size 8.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from maven_fast.config import (ConfigError, MavenConfig, build_dataclass, load_yaml, read_text,
                               short_repr, to_plain, yaml_location)


@dataclass
class DataConfig:
    cache: str = ""                    # feature cache written by `maven-fast extract`
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = 0
    max_frames: int = 0                # cut longer segments into windows of this many frames (0: whole)
    mask_missing_images: bool = True   # frames without an image get no loss (Aff-Wild2 rule)


@dataclass
class OptimConfig:
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    plateau_metric: Literal["loss", "P"] = "loss"   # what ReduceLROnPlateau watches
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    warmup_steps: int = 0              # cosine: linear warm-up steps
    grad_clip: float = 1.0             # max gradient norm; 0 disables clipping


@dataclass
class RunConfig:
    out_dir: str = "runs/maven"
    epochs: int = 100
    max_steps: int = 0                 # stop after this many optimiser steps (0: no limit)
    batch_size: int = 8                # per process
    seed: int = 0
    backend: Literal["auto", "eager", "cpu", "cuda", "triton"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    autocast: Literal["auto", "none", "bf16"] = "auto"   # auto: bf16 on GPU and on CPUs with native bf16, else none
    compile: bool = False              # torch.compile the model
    deterministic: bool = True         # torch.use_deterministic_algorithms (exact resume on CPU)
    log_every: int = 10                # steps between CSV/TensorBoard training rows
    eval_every: int = 1                # epochs between validations
    checkpoint_every: int = 0          # also save `last` every N steps (0: at epoch ends only)
    tensorboard: bool = True
    progress: bool = True              # tqdm bars (rank 0 only)
    dist_timeout_s: int = 300          # a rank that stops answering fails the job after this


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class TrainConfig:
    model: MavenConfig = field(default_factory=MavenConfig.paper)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        model = data.pop("model", None)
        cfg = build_dataclass(cls, data, path="")
        try:
            if model is not None:
                if isinstance(model, str):  # a preset name
                    cfg.model = MavenConfig.preset(model)
                elif isinstance(model, dict):
                    model = dict(model)
                    preset = model.pop("preset", None)
                    base = MavenConfig.preset(preset).to_dict() if preset else {}
                    cfg.model = MavenConfig.from_dict(_deep_merge(base, model))
                else:
                    raise ConfigError(f"expected a preset name or a mapping, got {type(model).__name__}")
            cfg.model.validate()
        except ConfigError as exc:  # keys of the model section: model.<key>
            message, key = str(exc), exc.key
            if message.startswith("config: "):  # unknown keys at the top of the section
                message = f"model: {message[8:]}"
            elif re.match(r"[a-z_]+[.:\[]", message):
                message = f"model.{message}"  # "cross_modal.embed_dim (7) must be ..."
            else:
                message = f"model: {message}"
            raise ConfigError(message, key=f"model.{key}" if key else "model") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Range checks of the data, optim and run values (the model checks its own)."""
        def check(key: str, value, ok: bool, want: str) -> None:
            if not ok:
                raise ConfigError(f"{key} must be {want}, got {short_repr(value)}", key=key)

        d, o, r = self.data, self.optim, self.run
        for key, value in (("data.num_workers", d.num_workers), ("data.max_frames", d.max_frames),
                           ("optim.plateau_patience", o.plateau_patience),
                           ("optim.warmup_steps", o.warmup_steps), ("run.epochs", r.epochs),
                           ("run.max_steps", r.max_steps), ("run.checkpoint_every", r.checkpoint_every)):
            check(key, value, value >= 0, ">= 0")
        for key, value in (("run.batch_size", r.batch_size), ("run.log_every", r.log_every),
                           ("run.eval_every", r.eval_every), ("run.dist_timeout_s", r.dist_timeout_s)):
            check(key, value, value >= 1, ">= 1")
        for key, value in (("optim.lr", o.lr), ("optim.weight_decay", o.weight_decay),
                           ("optim.grad_clip", o.grad_clip)):
            check(key, value, 0.0 <= value < float("inf"), "a finite number >= 0")
        for i, beta in enumerate(o.betas):
            check(f"optim.betas[{i}]", beta, 0.0 <= beta < 1.0, "in [0, 1)")
        check("optim.plateau_factor", o.plateau_factor, 0.0 < o.plateau_factor < 1.0, "in (0, 1)")
        check("run.seed", r.seed, 0 <= r.seed < 2**63, "in [0, 2**63)")
        for key, value in (("data.cache", d.cache), ("data.train_split", d.train_split),
                           ("data.val_split", d.val_split), ("run.out_dir", r.out_dir)):
            check(key, value, "\x00" not in value, "free of NUL characters")
        for key, value in (("data.cache", d.cache), ("run.out_dir", r.out_dir)):
            # undecodable bytes of a path arrive as surrogates; safetensors opens only UTF-8 paths
            check(key, value, _is_utf8(value), "a UTF-8 path (the cache and checkpoints are safetensors "
                  "files, which open only UTF-8 paths): choose another folder")

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def load(cls, path: str | os.PathLike | None, overrides: list[str] = ()) -> "TrainConfig":
        """Read ``path`` (YAML; None = defaults) and apply ``key.sub=value`` overrides.

        Every problem is a one-line :class:`ConfigError`: a YAML syntax error or a bad value
        in the file as ``PATH:LINE:COLUMN: ...``, a bad override as ``override 'KEY=VALUE': ...``.
        """
        data: dict[str, Any] = {}
        node = None
        if path is not None:
            loaded, node = load_yaml(read_text(path), str(path))
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: "
                                  f"a training config must be a YAML mapping, got {type(loaded).__name__}")
            data = loaded or {}
        given: dict[str, str] = {}
        for item in overrides:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override {short_repr(item)}: expected key=value, e.g. run.epochs=5")
            try:
                value = _parse_value(raw)
            except ConfigError as exc:
                raise ConfigError(f"override {short_repr(item)}: {exc}") from None
            try:
                _set_dotted(data, key, value)
            except ConfigError as exc:
                raise ConfigError(f"override {short_repr(item)}: {exc}") from None
            given[key] = item
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise _located(exc, path, node, given) from None
        except RecursionError:
            raise ConfigError(f"{path or 'config'}: nested too deeply") from None


def _located(exc: ConfigError, path, node, overrides: dict[str, str]) -> ConfigError:
    """``exc`` naming where its key was set: the override, else the file's line and column."""
    key = exc.key
    if key:
        for given, item in reversed(list(overrides.items())):
            if key == given or any(a.startswith(b + c) for a, b in ((key, given), (given, key))
                                   for c in ".["):  # set by it, inside it, or around it
                return ConfigError(f"override {short_repr(item)}: {exc}", key=key)
    if path is None:
        return exc
    where = yaml_location(node, key) if key and node is not None else None
    prefix = f"{path}:{where[0]}:{where[1]}" if where else str(path)
    return ConfigError(f"{prefix}: {exc}", key=key)


def _parse_value(raw: str) -> Any:
    """YAML scalar, except that numbers YAML 1.1 leaves as strings (1e-3) become floats."""
    value, _ = load_yaml(raw, "value")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    # `model` may be a preset name or a mapping; model=NAME and model.x=... combine.
    if parts == ["model"] and isinstance(value, str) and isinstance(data.get("model"), dict):
        data["model"]["preset"] = value
        return
    if parts[0] == "model" and len(parts) > 1 and isinstance(data.get("model"), str):
        data["model"] = {"preset": data["model"]}
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{part} is not a section")
    node[parts[-1]] = value
