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

import sys
from pathlib import Path

import torch

from maven_fast.benchmark.polar_head_suite import run_polar_head
from maven_fast.benchmark.script import parser, run_and_report


def main(argv=None) -> int:
    ap = parser(__doc__, Path(__file__).parent / "results")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args(argv)
    sizes = (1024, 16384) if args.quick else (1024, 4096, 16384, 65536)
    return run_and_report(
        "polar_head", args,
        lambda: run_polar_head(args.device, getattr(torch, args.dtype), sizes, rounds=7 if args.quick else 15),
        "Polar head benchmark", stem_extra=f"-{args.dtype}")


if __name__ == "__main__":
    sys.exit(main())
