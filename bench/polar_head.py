"""Benchmark: the polar head (Linear(256->2) + bounded polar activation + VA +
masked MSE), eager PyTorch vs torch.compile(eager) vs every fused backend, on
the same inputs, forward and forward+backward. The suite itself is
maven_fast.benchmark.polar_head_suite (also run by `maven-fast bench`).

Bytes moved (the op is memory-bound): forward reads x (N*D elements);
forward+backward reads x twice and writes dx: we report the effective
bandwidth 3*N*D*elem_size / time for fwd+bwd and N*D*elem_size / time for the
forward.

    python bench/polar_head.py [--device cpu|cuda] [--quick] [--out bench/results]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from maven_fast.benchmark import machine_description, machine_slug, write_report
from maven_fast.benchmark.polar_head_suite import run_polar_head
from maven_fast.benchmark.results import VariantMismatch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and rounds")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    sizes = (1024, 16384) if args.quick else (1024, 4096, 16384, 65536)
    try:
        result = run_polar_head(args.device, getattr(torch, args.dtype), sizes, rounds=7 if args.quick else 15)
    except VariantMismatch as exc:
        print(f"polar_head: {exc}", file=sys.stderr)
        return 1
    (table,) = result.section.tables
    machine = machine_description()
    stem = f"polar_head-{machine_slug(args.device)}-{args.dtype}-{machine['date']}"
    md, csv_path = write_report(args.out, stem, f"Polar head benchmark ({table.title})", machine,
                                table.header, table.rows, notes=table.notes)
    print(md.read_text())
    print(f"written: {md} and {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
