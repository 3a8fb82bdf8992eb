"""The precision the frozen encoders compute in, and the runtime options that go with it.

``compute_dtype``:

* ``float32``: plain fp32 (the reference);
* ``bfloat16`` / ``float16``: the encoder runs under :func:`torch.autocast`
  in that type (matrix products and convolutions in reduced precision with
  fp32 accumulation; normalisations, softmax and reductions stay fp32, as
  autocast's op lists say). The weights stay fp32; the outputs are returned
  as fp32;
* ``auto``: ``bfloat16`` where the hardware runs it fast (a CPU with
  AVX512-BF16 or AMX; a CUDA GPU of compute capability 8.0 or newer), else
  ``float32``. :func:`resolve_compute_dtype` says which and why.

The resolved type (never ``auto``) is what a feature cache and a checkpoint
record, so features made at one precision are never silently mixed with, or
fed to a model trained on, features made at another (see
:func:`check_compute_dtype`).
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from maven_fast.config import ConfigError

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
RESOLVED = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LEGACY_COMPUTE_DTYPE = "float32"
"""What a cache or checkpoint that records no compute dtype was made at (everything before
the option existed ran the encoders in fp32)."""


class ComputeDtypeMismatch(ConfigError):
    """Features made at one encoder precision met a cache or checkpoint made at another."""


@dataclass(frozen=True)
class HardwarePrecision:
    """What :func:`fast_bf16` found: whether bf16 is fast on a device, and the evidence."""

    fast: bool
    reason: str


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


CPU_BF16_ENV = "MAVEN_FAST_CPU_BF16"
"""``MAVEN_FAST_CPU_BF16=0`` treats the CPU as having no native bf16 (every ``auto`` then means fp32,
in this process and the ones it starts); unset or ``auto``: read the CPU."""


def cpu_bf16_disabled() -> bool:
    """True when :data:`CPU_BF16_ENV` is ``0``; a value other than ``0`` / ``auto`` is an error."""
    value = os.environ.get(CPU_BF16_ENV, "auto").strip().lower()
    if value not in ("0", "auto", ""):
        raise ConfigError(f"{CPU_BF16_ENV}={os.environ[CPU_BF16_ENV]!r}: expected 0 (treat this CPU as "
                          f"having no native bf16) or auto (read the CPU's flags); unset it for auto")
    return value == "0"


def cpu_bf16_features() -> list[str]:
    """The CPU's bf16 matrix features PyTorch uses (``avx512_bf16``, ``amx_bf16``), as found;
    none when :data:`CPU_BF16_ENV` is ``0``."""
    if cpu_bf16_disabled():
        return []
    found = []
    cpu = getattr(torch._C, "_cpu", None)
    checks = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported"))
    for flag, probe in checks:
        try:
            supported = bool(getattr(cpu, probe)()) if cpu is not None and hasattr(cpu, probe) else None
        except Exception:  # noqa: BLE001 - a probe that fails is "unknown": fall back to cpuinfo
            supported = None
        if supported is None:
            supported = flag in _cpu_flags()
        if supported:
            found.append(flag)
    return found


def fast_bf16(device: torch.device | str) -> HardwarePrecision:
    """Does ``device`` run bf16 matrix products faster than fp32?"""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        if major >= 8:
            return HardwarePrecision(True, f"{name} (sm_{major}{minor}) has bf16 tensor cores")
        return HardwarePrecision(False, f"{name} (sm_{major}{minor}) has no bf16 tensor cores (sm_80+ needed)")
    if device.type == "cpu":
        features = cpu_bf16_features()
        if features:
            return HardwarePrecision(True, f"the CPU has {' and '.join(features)}")
        if cpu_bf16_disabled():
            return HardwarePrecision(False, f"{CPU_BF16_ENV}=0 treats the CPU as having no native bf16")
        return HardwarePrecision(False, "the CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated "
                                        "in fp32 arithmetic, no faster)")
    return HardwarePrecision(False, f"no bf16 speed information for device type {device.type!r}")


def resolve_compute_dtype(compute_dtype: str, device: torch.device | str) -> tuple[str, str]:
    """``(resolved name, why)``: ``auto`` becomes ``bfloat16`` or ``float32`` by :func:`fast_bf16`."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype: expected one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    if compute_dtype != "auto":
        return compute_dtype, "given explicitly"
    hw = fast_bf16(device)
    return ("bfloat16" if hw.fast else "float32"), f"auto: {hw.reason}"


def autocast_context(device: torch.device, compute_dtype: str):
    """The context an encoder's forward runs in: autocast for bf16/fp16, nothing for fp32."""
    if compute_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=RESOLVED[compute_dtype])


def recorded_compute_dtype(value) -> str:
    """A cache's or checkpoint's record (missing in those made before the option: ``float32``)."""
    return LEGACY_COMPUTE_DTYPE if value in (None, "", "cache") else str(value)


def check_compute_dtype(have: str, want: str, *, have_what: str, want_what: str, override: str,
                        allow: bool = False) -> bool:
    """Raise :class:`ComputeDtypeMismatch` naming both precisions unless they agree or ``allow``.

    Returns True when they differ (and ``allow`` let it through), so the caller can warn.
    """
    if have == want:
        return False
    if allow:
        return True
    raise ComputeDtypeMismatch(
        f"encoder precision mismatch: {have_what} was made with the encoders computing in {have}, but "
        f"{want_what} computes in {want}; features of the two differ slightly, so they are not mixed. "
        f"Use --compute-dtype {have} (compute_dtype={have!r}) to match, or {override} to accept the mismatch"
    )
