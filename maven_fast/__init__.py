"""maven_fast: fused kernels and tooling for MAVEN valence-arousal emotion recognition."""
from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

from maven_fast._version import __version__
from maven_fast._build import build_info
from maven_fast.backends import BackendUnavailable, available_backends
from maven_fast.checkpoint import load_model, load_original_checkpoint, load_weights, save_weights
from maven_fast.config import MavenConfig
from maven_fast.model import MAVEN, MavenOutput

__all__ = [
    "__version__", "build_info", "BackendUnavailable", "available_backends",
    "MavenConfig", "MAVEN", "MavenOutput",
    "load_original_checkpoint", "load_model", "load_weights", "save_weights",
]
