"""What a benchmark suite hands back: its timed measurements (for the plot and
the SPEC 6 targets), its report section, and the variants it could not run."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from maven_fast.backends import backend_problems
from maven_fast.benchmark.report import Section
from maven_fast.benchmark.timing import Timing

#: Measurement.kind: the reference every ratio is taken to, a non-maven_fast
#: alternative (eager+SDPA, torch.compile), or a maven_fast fused backend.
KINDS = ("eager", "baseline", "fused")


class VariantMismatch(AssertionError):
    """A variant's result differs from the reference: the suite stops before timing anything."""


@dataclass
class Measurement:
    """One timed variant on one case.

    ``speedup`` = eager median / this median (same case and pass);
    ``flops`` is the work of one call by the suite's FLOP formula, the same for
    every variant (None: not a FLOP-bound op), so GFLOP/s = flops / median;
    ``executed_flops`` is what this variant performs (fewer when a fused op
    skips work that cannot change the result; None: = flops).
    """

    suite: str
    case: str
    pass_name: str
    variant: str
    kind: str
    timing: Timing
    speedup: float
    flops: float | None = None
    executed_flops: float | None = None

    @property
    def gflops(self) -> float | None:
        return None if self.flops is None else self.flops / (self.timing.median * 1e-3) / 1e9

    @property
    def executed_gflops(self) -> float | None:
        work = self.flops if self.executed_flops is None else self.executed_flops
        return None if work is None else work / (self.timing.median * 1e-3) / 1e9


def add_timed_rows(table, measurements: list[Measurement], suite: str, case: str, cells: list, pass_name: str,
                   timings: dict[str, Timing], kinds: dict[str, str], work: float, ceiling: float | None,
                   first: dict[str, float], flops: float | None = None) -> None:
    """One table row and one Measurement per timed variant: ``cells + [pass, variant, median,
    p20, p80, speed-up vs eager, work / s in units of 1e9 (GFLOP/s, GB/s), % of ``ceiling``
    (when given), first call s]``. ``work``: FLOPs or bytes of one call, the same for every
    variant."""
    base = timings["eager"].median
    for name, t in timings.items():
        rate = work / (t.median * 1e-3) / 1e9
        row = [*cells, pass_name, name, t.median, t.p20, t.p80, base / t.median, rate]
        if ceiling:
            row.append(100 * rate / ceiling)
        table.rows.append(row + [first[name]])
        measurements.append(Measurement(suite, case, pass_name, name, kinds[name], t, base / t.median, flops))


@dataclass
class Skipped:
    variant: str
    reason: str


@dataclass
class SuiteResult:
    """``available`` False: the suite did not run at all, ``reason`` says why."""

    name: str
    section: Section
    measurements: list[Measurement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    available: bool = True
    reason: str = ""
    extra: dict = field(default_factory=dict)

    def find(self, case: str, pass_name: str, variant: str | None = None, kind: str | None = None) -> list[Measurement]:
        return [m for m in self.measurements if m.case == case and m.pass_name == pass_name
                and (variant is None or m.variant == variant) and (kind is None or m.kind == kind)]


def skipped_lines(skipped: list[Skipped]) -> list[str]:
    return [f"skipped {s.variant}: {s.reason}" for s in skipped]


def describe_error(exc: BaseException, limit: int = 200) -> str:
    """``failed: Type: first line of the message`` (for a variant reported as skipped)."""
    first = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"failed: {type(exc).__name__}" + (f": {first}" if first else "")


def fused_backends(device, dtype: torch.dtype | None = None) -> tuple[list[str], list[Skipped]]:
    """The fused backends a benchmark can time on ``device`` (an op or model may still refuse
    one for its shapes), and the others with the reasons. Triton's CPU interpreter is a
    correctness tool, never timed."""
    device = torch.device(device)
    names, skipped = [], []
    for backend in ("cpu", "cuda", "triton"):
        problems = backend_problems(backend, device, dtype)
        if backend == "triton" and device.type == "cpu" and not problems:
            problems = ["the Triton CPU interpreter is a correctness tool, not a backend to time"]
        if problems:
            skipped.append(Skipped(f"maven_fast {backend}", "; ".join(problems)))
        else:
            names.append(backend)
    return names, skipped
