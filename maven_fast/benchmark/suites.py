"""The registry of benchmark suites and the driver behind ``maven-fast bench``.

One run measures the machine (fp32 and bf16 GEMM rate, copy bandwidth), runs
every registered suite that this build can run, judges SPEC 6's targets and
writes ONE report: ``<out>/<machine>-<date>[-quick].md`` and ``.csv`` (every
table) and ``.png`` (speed-up vs eager per variant across the sizes).

A suite is ``run(options, rates) -> SuiteResult``; ``unavailable()`` returns a
reason when this build cannot run it, ``devices`` lists where it has something
to compare (``unavailable_on(device)`` joins both; the report then says why). Adding a suite
is adding an entry to :data:`SUITES`.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from maven_fast.benchmark.machine import machine_description, machine_slug
from maven_fast.benchmark.report import Section, Table, write_sections_report
from maven_fast.benchmark.results import SuiteResult

Rates = dict[str, tuple[float | None, str]]

METHOD_NOTES = [
    "Every variant's output (and gradients, where a pass has a backward) is checked against the reference "
    "before it is timed; a variant that differs stops the run.",
    "Warm-up calls are excluded; the first call (with torch.compile: the compile time) is reported separately.",
    "Variants are timed in interleaved rounds (each round runs every variant in turn, each for >= 20 ms), so "
    "drift and background load hit all alike; tables give the median and the 20th/80th percentiles per call.",
    "Speed-up = eager median / variant median, on the same inputs, weights and seed.",
]


@dataclass
class BenchOptions:
    device: str = "cpu"
    quick: bool = False
    out: Path = Path("bench/results")
    suites: tuple[str, ...] = ()   # empty: all
    pipeline_seconds: float | None = None  # pipeline suite: seconds of the video extract/predict process
    accuracy_seeds: int | None = None  # accuracy suite: seeds 0..N-1 (None: 5; --quick: 2)
    accuracy_presets: tuple[str, ...] = ()  # accuracy suite: these presets only (empty: all)


@dataclass
class Suite:
    name: str
    title: str
    run: Callable[[BenchOptions, Rates], SuiteResult]
    unavailable: Callable[[], str | None] = field(default=lambda: None)
    default: bool = True  # False: runs only when named with --suite (long real-size runs)
    devices: tuple[str, ...] = ("cpu", "cuda")  # where it has something to compare

    def unavailable_on(self, device: str) -> str | None:
        """Why this suite does not run on ``device`` with this build (None: it runs)."""
        if device not in self.devices:
            return f"nothing to compare on {device}: this suite runs on {', '.join(self.devices)}"
        return self.unavailable()


# Suite modules import the model, ops and training code: loaded when a suite runs, so that
# building the CLI (which imports this registry) stays cheap.
def _polar_head(o: BenchOptions, rates: Rates) -> SuiteResult:
    from maven_fast.benchmark import polar_head_suite

    sizes = (1024, 16384) if o.quick else (1024, 4096, 16384, 65536)
    return polar_head_suite.run_polar_head(o.device, torch.float32, sizes, rounds=7 if o.quick else 15,
                                           copy_gbs=rates["copy"][0])


def _linear(o: BenchOptions, rates: Rates) -> SuiteResult:
    from maven_fast.benchmark import linear_suite

    # bf16 only where the CPU multiplies it natively (emulated bf16 GEMMs run at ~1 GFLOP/s on an AVX2 EPYC).
    dtype_rates = {torch.float32: rates["gemm_fp32"][0]}
    if rates["gemm_bf16"][0] is not None:
        dtype_rates[torch.bfloat16] = rates["gemm_bf16"][0]
    shapes = linear_suite.QUICK_SHAPES if o.quick else linear_suite.SHAPES
    return linear_suite.run_linear(o.device, dtype_rates, shapes, rounds=5 if o.quick else 10)


def _cross_modal_unavailable() -> str | None:
    from maven_fast.benchmark import cross_modal_suite

    return cross_modal_suite.unavailable_reason()


def _cross_modal(o: BenchOptions, rates: Rates) -> SuiteResult:
    from maven_fast.benchmark import cross_modal_suite

    cases = cross_modal_suite.QUICK_CASES if o.quick else tuple(cross_modal_suite.CASES)
    return cross_modal_suite.run_cross_modal(o.device, cases, rounds=5 if o.quick else 10,
                                             gemm_gflops=rates["gemm_fp32"][0], rates=rates)


def _train_step(o: BenchOptions, rates: Rates) -> SuiteResult:
    from maven_fast.benchmark import train_step_suite
    from maven_fast.benchmark.roofline import bf16_matmul_support

    presets = ("reference_mlp",) if o.quick else ("reference_mlp", "paper")
    # Without native bf16 the CPU emulates it (a 2-core AVX2 EPYC: reference_mlp's fused step 12x slower in
    # bf16 than in fp32): reference_mlp's bf16 rows show that; the paper preset's would take many minutes.
    no_native = rates["gemm_bf16"][0] is None and o.device == "cpu"
    return train_step_suite.run_train_step(o.device, presets, rounds=3 if o.quick else 7,
                                           gemm_gflops=rates["gemm_fp32"][0], include_compile=not o.quick,
                                           gemm_bf16_gflops=rates["gemm_bf16"][0],
                                           bf16_presets=("reference_mlp",) if no_native else None,
                                           bf16_left_out_reason=f"{bf16_matmul_support(o.device)}, which "
                                                                "makes this preset's step many times slower")


def _accuracy_unavailable() -> str | None:
    import importlib.util

    missing = [m for m in ("av", "soundfile", "torchaudio", "transformers", "timm")
               if importlib.util.find_spec(m) is None]
    if missing:
        return (f"needs the data and encoder extras to build the synthetic dataset and its features "
                f"(missing: {', '.join(missing)}; pip install 'maven-fast[data,encoders]')")
    return None


def _accuracy(o: BenchOptions, rates: Rates) -> SuiteResult:
    from maven_fast.benchmark import accuracy

    # Each training takes seconds; several seeds make the bf16-vs-fp32 comparison one of means, not of one
    # trajectory (accuracy's module docstring).
    seeds = o.accuracy_seeds or (2 if o.quick else 5)
    presets = o.accuracy_presets or accuracy.PRESETS
    return accuracy.run_accuracy(o.device, presets=presets, epochs=30 if o.quick else 60, seeds=tuple(range(seeds)))


def _pipeline_unavailable() -> str | None:
    reason = _accuracy_unavailable()
    return reason.replace("the synthetic dataset and its features", "the generated video and run the encoders") \
        if reason else None


def _pipeline(o: BenchOptions, rates: Rates) -> SuiteResult:
    from maven_fast.benchmark import pipeline_suite

    return pipeline_suite.run_pipeline(o.device, o.quick, log=_log, processed=o.pipeline_seconds)


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("polar_head", "Polar head", _polar_head),
    # on GPUs maven_fast's linear layers are torch's F.linear: the same work as eager
    Suite("linear", "Linear layers", _linear, devices=("cpu",)),
    Suite("cross_modal", "Cross-modal block", _cross_modal, _cross_modal_unavailable),
    Suite("train_step", "Training step", _train_step),
    Suite("accuracy", "Accuracy next to speed", _accuracy, _accuracy_unavailable),
    Suite("pipeline", "Pipeline: video to features and to valence/arousal", _pipeline, _pipeline_unavailable,
          default=False),
)}


def machine_section(rates: Rates) -> Section:
    labels = {"gemm_fp32": ("GEMM fp32", "GFLOP/s"), "gemm_bf16": ("GEMM bf16", "GFLOP/s"), "copy": ("copy", "GB/s")}
    rows = [[labels[name][0], "n/a" if value is None else value, labels[name][1], note]
            for name, (value, note) in rates.items()]
    table = Table("Ceilings", ["ceiling", "value", "unit", "how"], rows)
    return Section("Machine ceilings (measured in this run)", [table])


def _log(msg: str) -> None:
    print(f"[maven-fast bench] {msg}", file=sys.stderr, flush=True)


def run_suites(options: BenchOptions, rates: Rates) -> dict[str, SuiteResult]:
    """Runs the selected suites in registry order; a VariantMismatch propagates (the run fails)."""
    results: dict[str, SuiteResult] = {}
    for name, suite in SUITES.items():
        if (options.suites and name not in options.suites) or (not options.suites and not suite.default):
            continue
        reason = suite.unavailable_on(options.device)
        if reason:
            _log(f"{name}: {reason}")
            results[name] = SuiteResult(name, Section(suite.title, notes=[reason]), available=False, reason=reason)
            continue
        _log(f"{name}: running")
        t0 = time.perf_counter()
        results[name] = suite.run(options, rates)
        results[name].section.notes.append(f"suite wall time {time.perf_counter() - t0:.0f} s")
        _log(f"{name}: done in {time.perf_counter() - t0:.0f} s")
    return results


def run_benchmarks(options: BenchOptions) -> tuple[Path, Path, Path | None]:
    """Measures the machine, runs the suites, writes the report; returns (md, csv, png)."""
    if options.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available here")
    from maven_fast.benchmark.plot import plot_speedups
    from maven_fast.benchmark.roofline import measure_machine
    from maven_fast.benchmark.targets import spec6_gpu_targets, spec6_targets

    machine = machine_description()
    _log(f"measuring the machine ({options.device})")
    rates = measure_machine(options.device)
    results = run_suites(options, rates)
    stem = f"{machine_slug(options.device)}-{machine['date']}" + ("-quick" if options.quick else "")
    if options.suites:  # a report of some suites must not overwrite the day's full report
        stem += "-" + "-".join(options.suites)
    if options.accuracy_presets:  # nor the report of every preset
        stem += "-" + "-".join(options.accuracy_presets)
    if options.accuracy_seeds is not None:  # nor the day's report with the default seeds
        stem += f"-{options.accuracy_seeds}seeds"
    targets = [spec6_targets(results, rates["gemm_fp32"][0], options.device, rates["gemm_bf16"][0],
                             rates["gemm_bf16"][1])]
    targets.insert(0 if options.device == "cuda" else 1, spec6_gpu_targets(results, options.device))
    measurements = [m for r in results.values() for m in r.measurements]
    png = plot_speedups(measurements, Path(options.out) / f"{stem}.png",
                        f"maven_fast speed-up vs eager ({options.device}, {machine['date']})")
    sections = [Section("SPEC 6 targets", targets), machine_section(rates)] + [r.section for r in results.values()]
    title = f"maven_fast benchmark ({options.device}{', quick' if options.quick else ''})"
    from maven_fast.benchmark.timing import load_summary

    guard = load_summary()
    md, csv_path = write_sections_report(options.out, stem, title, machine, sections,
                                         METHOD_NOTES + ([guard] if guard else []),
                                         images=[png.name] if png else [])
    return md, csv_path, png
