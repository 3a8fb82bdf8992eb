"""Peak memory of a piece of work, measured in a separate (untimed) pass.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``,
less what was allocated before: the extra memory the work needs at its peak.

CPU: torch's CPU allocator keeps no statistics (and tracemalloc does not see
it), so we use the process's resident set: freed heap is first returned to the
OS (glibc ``malloc_trim``), the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs`` = 5, Linux), the work runs, and the peak (VmHWM)
less the RSS before is reported. It includes everything the process touched
meanwhile (allocator slack, lazily loaded code), so it is an upper bound on
the work's extra memory. The CPU ops' buffer pool (``maven_fast.ops.cpu_gemm``)
is emptied first, so the fused ops' buffers are counted like eager's, not
hidden in blocks faulted in by earlier calls. Where this is not possible the
result is None.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import torch

CPU_METHOD = ("peak RSS above RSS before (Linux VmHWM after /proc/self/clear_refs reset, after malloc_trim and "
              "emptying maven_fast's CPU buffer pool)")
CUDA_METHOD = "torch.cuda.max_memory_allocated above the memory allocated before"


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _release_pools() -> None:
    from maven_fast._extension import extension

    ext = extension()
    if ext is not None and hasattr(ext, "cpu_pool_release"):
        ext.cpu_pool_release()


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(fn: Callable[[], object], device: torch.device | str, calls: int = 1) -> float | None:
    """Extra memory (MiB) at the peak of ``calls`` calls of ``fn`` (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _release_pools()
    _malloc_trim()
    base = _status_kib("VmRSS")
    if base is None or not _reset_peak_rss():
        return None
    for _ in range(calls):
        fn()
    peak = _status_kib("VmHWM")
    return None if peak is None else max(0, peak - base) / 1024


def memory_method(device: torch.device | str) -> str:
    return CUDA_METHOD if torch.device(device).type == "cuda" else CPU_METHOD
