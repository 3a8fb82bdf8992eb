"""maven_fast: fused kernels and tooling for MAVEN valence-arousal emotion recognition."""
from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

from maven_fast._version import __version__
from maven_fast._build import build_info
from maven_fast.backends import BackendUnavailable, available_backends

__all__ = ["__version__", "build_info", "BackendUnavailable", "available_backends"]
