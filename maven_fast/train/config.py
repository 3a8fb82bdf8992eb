"""Training configuration: one YAML file (model + data + optimisation + run),
``key=value`` overrides on the command line.

Defaults follow the original MAVEN training script: Adam, lr 1e-4, weight
decay 1e-4, ReduceLROnPlateau(factor 0.1, patience 5) on the validation loss,
gradient clipping at 1.0, batch size 8.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from maven_fast.config import ConfigError, MavenConfig, build_dataclass, to_plain


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
        if model is not None:
            if isinstance(model, str):  # a preset name
                cfg.model = MavenConfig.preset(model)
            elif isinstance(model, dict):
                preset = model.pop("preset", None)
                base = MavenConfig.preset(preset).to_dict() if preset else {}
                cfg.model = MavenConfig.from_dict(_deep_merge(base, model))
            else:
                raise ConfigError(f"model: expected a preset name or a mapping, got {type(model).__name__}")
        cfg.model.validate()
        return cfg

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def load(cls, path: str | os.PathLike | None, overrides: list[str] = ()) -> "TrainConfig":
        """Read ``path`` (YAML; None = defaults) and apply ``key.sub=value`` overrides."""
        data: dict[str, Any] = {}
        if path is not None:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}: a training config must be a YAML mapping")
            data = loaded or {}
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r}: expected key=value, e.g. run.epochs=5")
            _set_dotted(data, key.strip(), _parse_value(raw))
        return cls.from_dict(data)


def _parse_value(raw: str) -> Any:
    """YAML scalar, except that numbers YAML 1.1 leaves as strings (1e-3) become floats."""
    value = yaml.safe_load(raw)
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
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value
