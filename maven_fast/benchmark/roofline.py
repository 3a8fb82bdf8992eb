"""What the machine can do, measured in the same run as the benchmarks: the
matrix-multiply rate and the copy bandwidth, so every figure is also a
fraction of a ceiling."""
from __future__ import annotations

import torch

from maven_fast.benchmark.flops import gemm_flops
from maven_fast.benchmark.timing import time_interleaved


#: square matmul sizes whose best rate is the GEMM ceiling
GEMM_SIZES = {"cpu": (512, 1024, 2048), "cuda": (4096, 8192)}


def measure_gemm_rate(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None) -> float:
    """GFLOP/s of square matmuls: the best over :data:`GEMM_SIZES` (or ``size``) of the rate at
    each size's 20th-percentile time. A ceiling is what the machine CAN do, so the fast end of
    the spread is taken (a median on a shared machine can fall below what a benchmark achieves)."""
    sizes = (size,) if size else GEMM_SIZES["cpu" if torch.device(device).type == "cpu" else "cuda"]
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = time_interleaved({"mm": lambda: torch.mm(a, b)}, device, rounds=7, warmup=2)["mm"]
        best = max(best, gemm_flops(n, n, n) / (t.p20 * 1e-3) / 1e9)
    return best


def measure_copy_bandwidth(device: str = "cpu", megabytes: int = 256) -> float:
    """GB/s of a device-to-device copy, counting bytes read and written (at the p20 time)."""
    n = megabytes * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    t = time_interleaved({"copy": lambda: dst.copy_(src)}, device, rounds=7, warmup=2)["copy"]
    return 2 * n * 4 / (t.p20 * 1e-3) / 1e9


def bf16_matmul_support(device: str = "cpu") -> str | None:
    """None when bf16 matmuls run natively on ``device``, else why not."""
    if device == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no native bf16"
    from maven_fast.backends import cpu_native_bf16

    if cpu_native_bf16():
        return None
    return "this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated)"


def measure_machine(device: str = "cpu") -> dict[str, tuple[float | None, str]]:
    """The ceilings every figure is compared to, measured now:
    ``{"gemm_fp32": (GFLOP/s, note), "gemm_bf16": (GFLOP/s or None, note), "copy": (GB/s, note)}``."""
    rates: dict[str, tuple[float | None, str]] = {
        "gemm_fp32": (measure_gemm_rate(device, torch.float32), "torch.mm, square 512-2048 (CPU) / 4096-8192 (GPU), best size at its p20 time, fp32"),
    }
    reason = bf16_matmul_support(device)
    rates["gemm_bf16"] = (None, f"not measured: {reason}") if reason else (
        measure_gemm_rate(device, torch.bfloat16), "as fp32, bf16")
    rates["copy"] = (measure_copy_bandwidth(device), "Tensor.copy_ of 256 MiB fp32 at its p20 time, bytes read + written")
    return rates
