"""Describe the machine a benchmark ran on (goes into every report)."""
from __future__ import annotations

import datetime
import os
import platform
import re

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> dict[str, str]:
    from maven_fast import build_info

    info = build_info()
    d = {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "cpu_capability": str(info.get("cpu_capability")),
        "triton": str(info.get("triton_version")),
    }
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
        d["cuda"] = str(torch.version.cuda)
    return d


def machine_slug(device: str = "cpu") -> str:
    """Short file-name-safe name: e.g. ``cpu-amd-epyc-2c``, ``cpu-amd-epyc-2c-avx512-bf16`` (the CPU's
    bf16 matrix features are in the name: the same model name covers CPUs with and without them,
    whose results differ) or ``cuda-nvidia-h100``."""
    if device == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        from maven_fast.encoders.precision import cpu_bf16_features

        name = " ".join([f"{_cpu_model()} {os.cpu_count()}c", *cpu_bf16_features()])
    name = re.sub(r"\(.*?\)|processor|\d+-core", "", name, flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{device}-{slug}"[:60]
