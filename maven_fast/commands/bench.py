"""``maven-fast bench``: every benchmark suite in one run, one report."""
from __future__ import annotations

import sys
from pathlib import Path

HELP = "benchmark eager vs torch.compile vs the fused backends and write one report"
DESCRIPTION = """\
  maven-fast bench [--quick] [--device cpu|cuda] [--out DIR] [--suite NAME ...]

Measures the machine (fp32/bf16 GEMM rate, copy bandwidth), then runs the
suites: the polar head, the cross-modal block (when this build has the fused
op), the full training step (reference_mlp and paper presets, batch 16) and
the validation P of eager vs fused training on the synthetic dataset. Every
variant is checked against the reference before it is timed (a wrong result
fails the run, exit 1); timings are interleaved rounds after warm-up, median
and p20/p80; compile time is reported separately.

Writes DIR/<machine>-<date>[-quick].md, .csv and .png (default DIR:
bench/results) with every table and the SPEC 6 targets (met / not met / not
measured, with the measured ratio). --quick (a few minutes on 2 CPU cores):
fewer sizes and rounds, the training step for reference_mlp only and without
torch.compile.

--suite pipeline (never part of the default run: it takes long on a CPU) times
video -> features (extract) and -> valence/arousal (predict) at real encoder
size (base-random Swin-B, HuBERT-base, RoBERTa-base) per stage, fp32 against
bf16, with peak RSS, the encoders alone, and predict's memory against video
length; --quick processes 1 s of the generated 5-minute video, --pipeline-seconds
N the first N s (a real-size fp32 run of the whole video takes hours on a small
CPU). --accuracy-seeds N trains every accuracy variant on N seeds (about 40 s
per seed on 2 CPU cores) and names the report ...-Nseeds. See docs/bench.md."""


def add_arguments(parser) -> None:
    from maven_fast.benchmark.suites import SUITES

    parser.add_argument("--quick", action="store_true", help="fewer sizes, cases and rounds (a few minutes on a CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="where to run (default: cuda if available, else cpu)")
    parser.add_argument("--out", default="bench/results", help="report directory (default: bench/results)")
    parser.add_argument("--suite", action="append", choices=list(SUITES), default=[],
                        help="run only this suite (repeatable; default: all)")
    parser.add_argument("--pipeline-seconds", type=_positive_seconds, default=None, metavar="N",
                        help="pipeline suite: extract and predict process the first N s of the 5-minute video "
                             "(default: all of it; --quick: 1)")
    parser.add_argument("--accuracy-seeds", type=_seed_count, default=None, metavar="N",
                        help="accuracy suite: train every variant with seeds 0..N-1 and compare the means "
                             f"(default: 5; --quick: 2; at most {MAX_ACCURACY_SEEDS}); more seeds shrink the "
                             "standard error of bf16 vs fp32")
    parser.add_argument("--accuracy-preset", action="append", choices=list(ACCURACY_PRESETS), default=[],
                        metavar="PRESET",
                        help="accuracy suite: train only this preset (repeatable; "
                             f"{' or '.join(ACCURACY_PRESETS)}; default: both); with --accuracy-seeds, "
                             "spends the seeds where the comparison needs them")


MAX_ACCURACY_SEEDS = 200
ACCURACY_PRESETS = ("reference_mlp", "paper")  # maven_fast.benchmark.accuracy.PRESETS (not imported: CLI start-up)


def _seed_count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seeds, got {text!r}") from None
    if not 1 <= value <= MAX_ACCURACY_SEEDS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_ACCURACY_SEEDS} seeds, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 300] (the generated video is 5 minutes), got {text}")
    return value


def run(args) -> int:
    import torch

    from maven_fast.benchmark.results import VariantMismatch
    from maven_fast.benchmark.suites import BenchOptions, run_benchmarks

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.pipeline_seconds is not None and "pipeline" not in args.suite:
        print("maven-fast bench: --pipeline-seconds applies to the pipeline suite: add --suite pipeline",
              file=sys.stderr)
        return 2
    for flag, given in (("--accuracy-seeds", args.accuracy_seeds is not None),
                        ("--accuracy-preset", bool(args.accuracy_preset))):
        if given and args.suite and "accuracy" not in args.suite:
            print(f"maven-fast bench: {flag} applies to the accuracy suite: add --suite accuracy", file=sys.stderr)
            return 2
    presets = tuple(dict.fromkeys(args.accuracy_preset))  # in the order given, once each
    options = BenchOptions(device=device, quick=args.quick, out=Path(args.out), suites=tuple(args.suite),
                           pipeline_seconds=args.pipeline_seconds, accuracy_seeds=args.accuracy_seeds,
                           accuracy_presets=presets)
    try:
        md, csv_path, png = run_benchmarks(options)
    except VariantMismatch as exc:
        print(f"maven-fast bench: a variant gave a wrong result, nothing was reported: {exc}", file=sys.stderr)
        return 1
    text = md.read_text()
    start = text.find("## SPEC 6 targets")
    end = text.find("\n## ", start + 1)
    print(text[start:end if end > 0 else None].rstrip())
    print(f"\nreport: {md}\n        {csv_path}" + (f"\n        {png}" if png else ""))
    return 0
