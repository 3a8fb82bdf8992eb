"""Benchmark (accuracy): the frozen encoders at reduced precision (bf16, fp16) against fp32.

Per encoder: cosine similarity (mean, worst) and relative error of the features on
real-shaped inputs, against the documented floor (mean cosine >= 0.999, worst >= 0.99);
then a MAVEN model trained on fp32 features of the synthetic dataset, evaluated on
validation features made at each precision (|dCCC|). See
maven_fast/benchmark/precision_accuracy.py.

    python bench/encoder_precision.py [--encoders tiny|base-random] [--downstream-encoders tiny|base-random]
                                      [--quick] [--out bench/results]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maven_fast.benchmark.machine import machine_description, machine_slug
from maven_fast.benchmark.precision_accuracy import run_precision_accuracy
from maven_fast.benchmark.report import write_sections_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", choices=("tiny", "base-random"), default="base-random",
                    help="encoders whose features are compared (default base-random: real size)")
    ap.add_argument("--downstream-encoders", choices=("tiny", "base-random"), default="tiny",
                    help="encoders of the trained-model comparison (default tiny; base-random extracts the "
                         "synthetic dataset at real size: ~10 min on 2 CPU cores)")
    ap.add_argument("--quick", action="store_true", help="fewer inputs and epochs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    result = run_precision_accuracy(args.encoders, args.quick, log=lambda m: print(m, file=sys.stderr),
                                    downstream_encoders=args.downstream_encoders)
    machine = machine_description()
    stem = (f"encoder-precision-{machine_slug('cpu')}-{args.encoders}-{machine['date']}"
            + ("-quick" if args.quick else ""))
    md, _ = write_sections_report(args.out, stem, "Encoder precision: reduced precision vs fp32", machine,
                                  [result.section])
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
