"""Interleaved timing of several variants of the same work."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    """Per-call times of one variant. ``samples_ms``: one per round (on CUDA the device
    time between CUDA events around back-to-back calls). ``host_samples_ms`` (CUDA only):
    host-inclusive latency of ONE call per round, from the Python call until the device
    has finished it (launch overhead included), for launch-bound work."""

    name: str
    samples_ms: list[float]
    host_samples_ms: list[float] | None = None

    @property
    def host_median(self) -> float | None:
        return statistics.median(self.host_samples_ms) if self.host_samples_ms else None

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    def quantile(self, q: float) -> float:
        s = sorted(self.samples_ms)
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    @property
    def p20(self) -> float:
        return self.quantile(0.2)

    @property
    def p80(self) -> float:
        return self.quantile(0.8)


def _timer(device: torch.device) -> Callable[[Callable[[], object], int], float]:
    """Returns f(fn, calls) -> milliseconds per call (device time on CUDA)."""
    if device.type == "cuda":
        def cuda_time(fn, calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / calls
        return cuda_time

    def cpu_time(fn, calls):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) * 1e3 / calls
    return cpu_time


def host_latency_ms(fn: Callable[[], object]) -> float:
    """Wall time of one CUDA call, from an idle device to its completion."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def time_interleaved(
    variants: dict[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    rounds: int = 15,
    warmup: int = 3,
    min_round_ms: float = 20.0,
) -> dict[str, Timing]:
    """Times each variant in ``rounds`` interleaved rounds (after ``warmup`` calls).

    Each round runs a variant enough times back-to-back to last about
    ``min_round_ms`` (calibrated once), so tiny kernels are not timer-bound.
    On CUDA each round also records one call's host-inclusive latency.
    """
    device = torch.device(device)
    timer = _timer(device)
    calls: dict[str, int] = {}
    for name, fn in variants.items():
        for _ in range(warmup):
            fn()
        one = max(timer(fn, 1), 1e-3)
        calls[name] = max(1, int(min_round_ms / one))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    host: dict[str, list[float]] | None = {name: [] for name in variants} if device.type == "cuda" else None
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(timer(fn, calls[name]))
            if host is not None:
                host[name].append(host_latency_ms(fn))
    return {name: Timing(name, s, host[name] if host else None) for name, s in samples.items()}
