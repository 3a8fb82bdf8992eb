"""What the machine can do, measured in the same run as the benchmarks: the
matrix-multiply rate and the copy bandwidth, so every figure is also a
fraction of a ceiling."""
from __future__ import annotations

import torch

from maven_fast.benchmark.flops import gemm_flops
from maven_fast.benchmark.timing import time_interleaved


def measure_gemm_rate(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None) -> float:
    """GFLOP/s of a square matmul (CPU: 1024^3 by default; GPU: 8192^3)."""
    n = size or (1024 if device == "cpu" else 8192)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_interleaved({"mm": lambda: torch.mm(a, b)}, device, rounds=7, warmup=2)["mm"]
    return gemm_flops(n, n, n) / (t.median * 1e-3) / 1e9


def measure_copy_bandwidth(device: str = "cpu", megabytes: int = 256) -> float:
    """GB/s of a device-to-device copy, counting bytes read and written."""
    n = megabytes * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    t = time_interleaved({"copy": lambda: dst.copy_(src)}, device, rounds=7, warmup=2)["copy"]
    return 2 * n * 4 / (t.median * 1e-3) / 1e9
