"""Checkpoints: the original MAVEN ``.pth`` files, and maven_fast's own safetensors weights.

* :func:`load_original_checkpoint` reads a ``best_model.pth`` of ``Train_MLP.py``
  or ``Train_BEiT.py`` with ``torch.load(weights_only=True)`` (no arbitrary
  unpickling), tells the two apart by their keys, sizes the model from the
  tensor shapes and returns it with the weights loaded.
* :func:`save_weights` / :func:`load_weights` / :func:`load_model` store our own
  models as safetensors, with the model's YAML config in the file's metadata.
"""
from __future__ import annotations

import os
import re

import torch
from torch import Tensor

from maven_fast.config import BeitConfig, EncoderConfig, MavenConfig
from maven_fast.model.maven import MAVEN

_METADATA_CONFIG = "maven_fast.config"


class CheckpointMismatch(ValueError):
    """A state_dict does not fit any MAVEN variant; the message lists the key differences."""


# ---------------------------------------------------------------------- original checkpoints
def _unwrap(obj) -> dict[str, Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointMismatch("the checkpoint does not hold a state_dict (a mapping of names to tensors)")
    # nn.DataParallel (used by Train_BEiT.py) prefixes every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def detect_variant(state: dict[str, Tensor]) -> str:
    """``reference_beit`` if BEiT keys are present, else ``reference_mlp``."""
    if any(k.startswith(("beit3_encoders.", "projection_layer.")) for k in state):
        return "reference_beit"
    return "reference_mlp"


def _shape(state: dict[str, Tensor], key: str, dim: int, default: int) -> int:
    t = state.get(key)
    return int(t.shape[dim]) if t is not None and t.ndim > dim else default


def config_from_state_dict(
    state: dict[str, Tensor], variant: str, num_heads: int = 2, beit_num_heads: int = 12
) -> MavenConfig:
    """The preset ``variant`` sized from the tensor shapes in ``state`` (missing keys keep defaults).

    Head counts leave no trace in the weights: ``num_heads`` (cross-modal, the
    original's 2) and ``beit_num_heads`` (BEiT-base's 12) are taken as given.
    """
    config = MavenConfig.preset(variant)
    prefix = "multihead_attention."
    embed = _shape(state, prefix + "video_proj.weight", 0, config.cross_modal.embed_dim)
    config.encoders = EncoderConfig(
        video_dim=_shape(state, prefix + "video_proj.weight", 1, config.encoders.video_dim),
        audio_dim=_shape(state, prefix + "audio_proj.weight", 1, config.encoders.audio_dim),
        text_dim=_shape(state, prefix + "text_proj.weight", 1, config.encoders.text_dim),
    )
    config.cross_modal.embed_dim = embed
    config.cross_modal.num_heads = num_heads
    config.regressor.hidden_sizes = (
        _shape(state, "regressor.fc.0.weight", 0, config.regressor.hidden_sizes[0]),
        _shape(state, "regressor.fc.3.weight", 0, config.regressor.hidden_sizes[1]),
    )
    if variant == "reference_beit":
        layer_ids = {int(m.group(2)) for k in state if (m := re.match(r"beit3_encoders\.(\d+)\.layer\.(\d+)\.", k))}
        branch_ids = {int(m.group(1)) for k in state if (m := re.match(r"beit3_encoders\.(\d+)\.", k))}
        first = "beit3_encoders.0.layer.0."
        config.beit = BeitConfig(
            hidden_size=_shape(state, "projection_layer.weight", 0, config.beit.hidden_size),
            num_hidden_layers=max(layer_ids) + 1 if layer_ids else config.beit.num_hidden_layers,
            num_attention_heads=beit_num_heads,
            intermediate_size=_shape(state, first + "intermediate.dense.weight", 0, config.beit.intermediate_size),
            layer_scale_init_value=config.beit.layer_scale_init_value if (first + "lambda_1") in state else 0.0,
            num_branches=max(branch_ids) + 1 if branch_ids else config.beit.num_branches,
        )
    config.validate()
    return config


def _key_report(model_state: dict[str, Tensor], state: dict[str, Tensor], limit: int = 20) -> tuple[int, str]:
    missing = sorted(set(model_state) - set(state))
    unexpected = sorted(set(state) - set(model_state))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(model_state[k].shape)}"
        for k in set(state) & set(model_state) if state[k].shape != model_state[k].shape
    )
    lines = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong_shape)):
        if items:
            shown = items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])
            lines.append(f"  {title} ({len(items)}):\n    " + "\n    ".join(shown))
    return len(missing) + len(unexpected) + len(wrong_shape), "\n".join(lines)


def _meta_model_state(config: MavenConfig) -> dict[str, Tensor]:
    with torch.device("meta"):
        return MAVEN(config).state_dict()


def load_original_checkpoint(
    path: str | os.PathLike, num_heads: int = 2, beit_num_heads: int = 12, backend: str = "eager"
) -> MAVEN:
    """Load an original MAVEN ``.pth`` (``Train_MLP.py`` or ``Train_BEiT.py``) as a :class:`MAVEN`.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``;
    a ``module.`` prefix (nn.DataParallel) or a ``{"state_dict": ...}`` wrapper is
    removed. The returned model is in eval mode. A state_dict that fits neither
    variant raises :class:`CheckpointMismatch` listing the missing, unexpected and
    mis-shaped keys against the closest variant.
    """
    state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    reports = []
    for variant in (detect_variant(state), *({"reference_mlp", "reference_beit"} - {detect_variant(state)})):
        try:
            config = config_from_state_dict(state, variant, num_heads, beit_num_heads)
        except ValueError:
            config = MavenConfig.preset(variant)
        problems, report = _key_report(_meta_model_state(config), state)
        if problems == 0:
            model = MAVEN(config, backend=backend)
            model.load_state_dict(state, strict=True)
            return model.eval()
        reports.append((problems, variant, report))
    problems, variant, report = min(reports)
    raise CheckpointMismatch(
        f"{os.fspath(path)} is not an original MAVEN checkpoint; closest variant is {variant} "
        f"({problems} differences):\n{report}"
    )


# ---------------------------------------------------------------------- our own weights
def save_weights(model: MAVEN, path: str | os.PathLike) -> None:
    """Write ``model.state_dict()`` as safetensors, with its config (YAML) in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, os.fspath(path), metadata={_METADATA_CONFIG: model.config.to_yaml(), "format": "pt"})


def read_config(path: str | os.PathLike) -> MavenConfig:
    """The config stored in a file written by :func:`save_weights`."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if _METADATA_CONFIG not in metadata:
        raise CheckpointMismatch(f"{os.fspath(path)} has no maven_fast config in its metadata")
    return MavenConfig.from_yaml(metadata[_METADATA_CONFIG])


def load_weights(model: MAVEN, path: str | os.PathLike, strict: bool = True) -> MAVEN:
    """Load safetensors weights written by :func:`save_weights` into ``model``."""
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    model.load_state_dict(load_file(os.fspath(path), device=str(device)), strict=strict)
    return model


def load_model(path: str | os.PathLike, backend: str = "eager") -> MAVEN:
    """Rebuild the model saved by :func:`save_weights` (config from the metadata) and load its weights."""
    config = read_config(path)
    config.beit.init_from = None  # the saved weights replace any pretrained initialisation
    return load_weights(MAVEN(config, backend=backend), path)
