"""Interleaved timing of several variants of the same work.

On a shared machine, :class:`LoadGuard` (``MAVEN_FAST_BENCH_QUIET=<fraction>``,
e.g. ``0.1``; Linux) keeps the timings clean of other processes: before each
round it waits until the other processes use less than that fraction of the
CPUs (for one second), and a round during which they used more is discarded
and run again. After ``MAVEN_FAST_BENCH_QUIET_WAIT`` seconds (default 600) of
waiting a round is kept anyway and counted as loaded; :func:`load_summary` says
how many rounds were discarded and kept under load."""
from __future__ import annotations

import os
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


class LoadGuard:
    """CPU use of the other processes on the machine (/proc/stat minus this process), see the
    module docstring. ``threshold`` None: off (every round is kept)."""

    def __init__(self, threshold: float | None = None, max_wait_s: float = 600.0) -> None:
        self.threshold = threshold if os.path.exists("/proc/stat") else None
        self.max_wait_s = max_wait_s
        self.discarded = self.loaded = self.rounds = 0
        self.waited_s = 0.0

    @classmethod
    def from_env(cls) -> "LoadGuard":
        v = os.environ.get("MAVEN_FAST_BENCH_QUIET", "")
        wait = float(os.environ.get("MAVEN_FAST_BENCH_QUIET_WAIT", "600"))
        return cls(float(v) if v else None, wait)

    @staticmethod
    def _jiffies() -> tuple[int, int, float]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        t = os.times()
        return sum(v) - v[3] - v[4], sum(v), (t.user + t.system) * os.sysconf("SC_CLK_TCK")

    def start(self):
        return self._jiffies()

    def others(self, start) -> float:
        """Fraction of all CPUs' time that other processes used since ``start``."""
        b0, a0, o0 = start
        b1, a1, o1 = self._jiffies()
        return max(0.0, (b1 - b0) - (o1 - o0)) / max(1, a1 - a0)

    def wait_quiet(self, span_s: float = 1.0) -> bool:
        """Waits until the others stay under the threshold for ``span_s``; False after max_wait_s."""
        t0 = time.monotonic()
        quiet_since = None
        while time.monotonic() - t0 < self.max_wait_s:
            mark = self.start()
            time.sleep(0.25)
            if self.others(mark) < self.threshold:
                quiet_since = quiet_since or time.monotonic() - 0.25
                if time.monotonic() - quiet_since >= span_s:
                    self.waited_s += time.monotonic() - t0
                    return True
            else:
                quiet_since = None
        self.waited_s += time.monotonic() - t0
        return False


_GUARD: LoadGuard | None = None


def load_guard() -> LoadGuard:
    """The process-wide guard, configured from the environment on first use."""
    global _GUARD
    if _GUARD is None:
        _GUARD = LoadGuard.from_env()
    return _GUARD


def load_summary() -> str | None:
    """One line on the load guard's work in this process (None when it is off)."""
    g = load_guard()
    if g.threshold is None:
        return None
    return (f"load guard: rounds timed while other processes used < {g.threshold:.0%} of the CPUs; "
            f"{g.rounds} rounds kept, {g.discarded} discarded for other load and run again, {g.loaded} kept "
            f"under load after waiting {g.max_wait_s:.0f} s for a quiet machine; {g.waited_s:.0f} s spent waiting")


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
    guard = load_guard()
    kept = 0
    while kept < rounds:
        quiet = guard.threshold is None or guard.wait_quiet()
        mark = guard.start() if guard.threshold is not None else None
        one = {name: timer(fn, calls[name]) for name, fn in variants.items()}
        one_host = {name: host_latency_ms(fn) for name, fn in variants.items()} if host is not None else {}
        if mark is not None and quiet and guard.others(mark) >= guard.threshold:
            guard.discarded += 1
            continue
        guard.rounds += 1
        guard.loaded += 0 if quiet else 1
        kept += 1
        for name in variants:
            samples[name].append(one[name])
            if host is not None:
                host[name].append(one_host[name])
    return {name: Timing(name, s, host[name] if host else None) for name, s in samples.items()}
