"""Loading encoder weights by hub name or local path, honouring ``HF_HUB_OFFLINE``."""
from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}


class EncoderUnavailable(OSError):
    """Encoder weights could not be loaded; the message names them and how to use a local copy."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now or was at import."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers and timm
        return False
    return bool(constants.HF_HUB_OFFLINE)


def is_local(name_or_path: str) -> bool:
    return os.path.exists(os.path.expanduser(name_or_path))


def unavailable(modality: str, loader: str, name_or_path: str, exc: BaseException) -> EncoderUnavailable:
    """The error to raise when ``loader.from_pretrained(name_or_path)`` failed."""
    if is_local(name_or_path):
        where = f"the local path {name_or_path!r} could not be read as a {modality} encoder"
    elif os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")):
        where = f"the local path {name_or_path!r} does not exist"
    elif hub_offline():
        where = f"{name_or_path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    else:
        where = f"{name_or_path!r} could not be downloaded from the Hugging Face hub"
    return EncoderUnavailable(
        f"could not load the {modality} encoder: {where} ({type(exc).__name__}: {exc}).\n"
        f"Point at a local copy instead: load_encoders('base', {modality}='/path/to/dir') or "
        f"{loader}.from_pretrained('/path/to/dir'), where the directory was written by save_pretrained "
        "(config.json + weights; for the video encoder a timm model directory or a weights file)."
    )
