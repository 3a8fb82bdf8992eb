"""Loading of the compiled extension ``maven_fast._C``.

The extension is compiled against one torch release; loading it under another
fails with undefined symbols. We compare versions first so the error says what
happened and how to fix it. Nothing here falls back silently: callers that need
the extension call :func:`require_extension`, which raises with the reason.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch

_C: ModuleType | None = None
_load_error: str | None = None

REBUILD_HINT = (
    "rebuild it against the installed torch: `pip install --no-build-isolation -e .` "
    "(or `bash scripts/setup.sh`) in the maven_fast checkout"
)


def _torch_base(version: str) -> str:
    return version.split("+")[0]


def _load() -> None:
    global _C, _load_error
    try:
        cfg = importlib.import_module("maven_fast._build_config")
    except ImportError:
        _load_error = (
            "the compiled extension maven_fast._C is not built (maven_fast was imported from a "
            f"source tree without a build); {REBUILD_HINT}"
        )
        return
    if _torch_base(cfg.TORCH_VERSION) != _torch_base(torch.__version__):
        _load_error = (
            f"maven_fast._C was built for torch {cfg.TORCH_VERSION} but torch "
            f"{torch.__version__} is installed; {REBUILD_HINT}"
        )
        return
    try:
        _C = importlib.import_module("maven_fast._C")
    except ImportError as exc:  # e.g. undefined symbol from an ABI mismatch
        _load_error = f"maven_fast._C failed to load ({exc}); {REBUILD_HINT}"


def extension() -> ModuleType | None:
    """The loaded extension module, or None when it cannot be loaded."""
    return _C


def extension_error() -> str | None:
    """Why the extension cannot be used, or None when it loaded."""
    return _load_error


def require_extension() -> ModuleType:
    if _C is None:
        raise RuntimeError(_load_error)
    return _C


_load()
