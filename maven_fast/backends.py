"""The one place that decides which implementation runs an op.

Backends:
  ``eager``   pure PyTorch reference (any device, any dtype torch supports)
  ``cpu``     the C++ CPU kernels of ``maven_fast._C`` (CPU tensors)
  ``cuda``    the CUDA C++ kernels of ``maven_fast._C`` (CUDA tensors; built when
              a CUDA toolkit and a CUDA torch were present at build time)
  ``triton``  the Triton kernels in ``maven_fast.kernels`` (CUDA tensors; CPU
              tensors only under ``TRITON_INTERPRET=1``, for testing)
  ``auto``    CPU tensors -> ``cpu``; CUDA tensors -> the first backend that
              can run in the op's order for their dtype (:data:`AUTO_GPU_ORDER`).

A backend that cannot run raises :class:`BackendUnavailable` listing every
reason; there is never a silent fallback to another backend.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterable

import torch

from maven_fast._extension import extension, extension_error

BACKENDS = ("eager", "cpu", "cuda", "triton")
BACKEND_CHOICES = ("auto",) + BACKENDS

# What ``auto`` runs on CUDA tensors, per op and dtype: backends in order of
# preference (the first that can run). ESTIMATES, not measurements: no GPU has
# timed these kernels yet; a GPU benchmark (bench/gpu.sh) is to replace them.
# Ops not listed: AUTO_GPU_DEFAULT.
AUTO_GPU_DEFAULT = ("cuda", "triton")
AUTO_GPU_ORDER: dict[str, dict[torch.dtype, tuple[str, ...]]] = {
    "cross_modal_block": {
        torch.float32: ("cuda", "triton"),
        torch.bfloat16: ("cuda", "triton"),
        torch.float16: ("cuda", "triton"),
    },
}
AUTO_GPU_REASON = {
    ("cross_modal_block", torch.float32): (
        "both run fp32 attention on CUDA cores (Triton's fp32 dots use IEEE precision, no TF32); the CUDA "
        "kernels skip Triton's launch overhead (estimate)"),
    ("cross_modal_block", torch.bfloat16): (
        "the CUDA attention kernels run bf16 on tensor cores (mma.sync m16n8k16, FlashAttention-2 style, "
        "all general pathways in one launch) and skip Triton's Python launch overhead; Triton's dots run on "
        "tensor cores too (estimate, not measured: no GPU has timed either)"),
    ("cross_modal_block", torch.float16): (
        "the CUDA attention kernels run fp16 on tensor cores (mma.sync m16n8k16) in one launch and skip "
        "Triton's Python launch overhead (estimate, not measured)"),
}


def auto_gpu_order(op: str, dtype: torch.dtype | None) -> tuple[str, ...]:
    """The backends ``auto`` tries, in order, for op ``op`` on CUDA tensors of ``dtype``."""
    return AUTO_GPU_ORDER.get(op, {}).get(dtype, AUTO_GPU_DEFAULT)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run these inputs; the message lists why."""


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'maven-fast[triton]')"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # pragma: no cover - broken installs
        return f"triton failed to import: {exc}"
    return None


@torch.compiler.assume_constant_result
def _cuda_kernels_built() -> bool:
    """Whether maven_fast._C holds the CUDA kernels: a build-time fact, so
    torch.compile evaluates it once while tracing (the pybind call itself
    cannot be traced, and fullgraph=True would fail on it)."""
    ext = extension()
    return ext is not None and bool(ext.build_info()["cuda"])


def backend_problems(
    backend: str,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    supported_dtypes: Iterable[torch.dtype] | None = None,
) -> list[str]:
    """Every reason ``backend`` cannot run on ``device``/``dtype`` (empty: it can).

    ``supported_dtypes`` narrows the dtypes an op's kernels accept; a caller
    adds op-specific reasons (head size, feature size) of its own.
    """
    device = torch.device(device)
    problems: list[str] = []
    if backend not in BACKENDS:
        return [f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}"]
    if backend == "eager":
        return problems
    if backend in ("cpu", "cuda"):
        if extension() is None:
            problems.append(str(extension_error()))
        if backend == "cpu" and device.type != "cpu":
            problems.append(f"backend 'cpu' runs CPU tensors, got tensors on {device}")
        if backend == "cuda":
            if device.type != "cuda":
                problems.append(f"backend 'cuda' runs CUDA tensors, got tensors on {device}")
            ext = extension()
            if ext is not None and not _cuda_kernels_built():
                reason = ext.build_info()["cuda_disabled_reason"] or "unknown"
                problems.append(
                    f"maven_fast._C was built without CUDA kernels ({reason}); rebuild with a CUDA "
                    "toolkit and MAVEN_FAST_CUDA=ON"
                )
    if backend == "triton":
        err = _triton_import_error()
        if err:
            problems.append(err)
        if device.type == "cpu" and not triton_interpret():
            problems.append(
                "backend 'triton' runs CUDA tensors; for CPU tensors set TRITON_INTERPRET=1 before "
                "importing maven_fast (interpreter, for testing only)"
            )
        elif device.type not in ("cpu", "cuda"):
            problems.append(f"backend 'triton' does not support device {device}")
    if dtype is not None and supported_dtypes is not None:
        supported = tuple(supported_dtypes)
        if dtype not in supported:
            names = ", ".join(str(d).replace("torch.", "") for d in supported)
            problems.append(f"backend {backend!r} supports dtypes {names}, got {dtype}")
    return problems


def resolve_backend(
    backend: str,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    supported_dtypes: dict[str, Iterable[torch.dtype]] | None = None,
    op: str = "maven_fast",
) -> str:
    """Turn ``auto`` into a concrete backend and check that it can run.

    Raises :class:`BackendUnavailable` naming every reason it cannot.
    """
    device = torch.device(device)
    supported_dtypes = supported_dtypes or {}
    if backend not in BACKEND_CHOICES:
        raise BackendUnavailable(
            f"{op}: unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}"
        )
    if backend == "auto":
        if device.type == "cuda":
            order = auto_gpu_order(op, dtype)
            problems = {b: backend_problems(b, device, dtype, supported_dtypes.get(b)) for b in order}
            runnable = [b for b in order if not problems[b]]
            if not runnable:
                raise BackendUnavailable(
                    f"{op}: backend 'auto' found no fused backend for {dtype} tensors on {device}:\n"
                    + "\n".join(f"  {b}:\n    - " + "\n    - ".join(problems[b]) for b in order)
                    + "\n(backend='eager' runs the pure-PyTorch reference everywhere)"
                )
            backend = runnable[0]
        else:
            backend = "cpu"
    problems = backend_problems(backend, device, dtype, supported_dtypes.get(backend))
    if problems:
        raise BackendUnavailable(
            f"{op}: backend {backend!r} cannot run here:\n  - " + "\n  - ".join(problems)
            + "\n(backend='eager' runs the pure-PyTorch reference everywhere)"
        )
    return backend


#: the floating dtypes torch's own functions take (every backend of an op that is torch's off the CPU)
FLOATING_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def runs_cpu_op(backend: str, device: torch.device | str, dtype: torch.dtype, op: str) -> bool:
    """For an op whose only maven_fast kernel is the CPU one (linear, dropout): True when
    ``backend`` runs that kernel on these tensors, False when it runs torch's own function
    (``eager``; ``auto`` off the CPU; ``cuda`` / ``triton``, whose GPU ops use torch's for this
    work too). Raises :class:`BackendUnavailable` like :func:`resolve_backend` (e.g. ``cpu``
    on CUDA tensors, or no compiled extension)."""
    device = torch.device(device)
    if backend == "eager" or (backend == "auto" and device.type != "cpu"):
        return False
    return resolve_backend(backend, device, dtype, {"cpu": FLOATING_DTYPES}, op=op) == "cpu"


def available_backends(device: torch.device | str = "cpu") -> dict[str, list[str]]:
    """For each backend, the reasons it cannot run on ``device`` (empty list: available)."""
    return {b: backend_problems(b, device) for b in BACKENDS}


def cpu_native_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX), so bf16
    GEMMs run faster than fp32 ones; without them torch emulates bf16 and it is slower than fp32
    (measured on a 2-core AVX2 EPYC: the reference_mlp training step 30x slower in eager bf16
    than in fp32). What ``run.autocast=auto`` and the benchmarks' bf16 GEMM ceiling go by; the
    same test as the encoders' ``compute_dtype=auto`` (:func:`maven_fast.encoders.precision.fast_bf16`)."""
    from maven_fast.encoders.precision import cpu_bf16_features

    return bool(cpu_bf16_features())
