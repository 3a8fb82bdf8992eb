"""Benchmark: nn.Linear at the paper training step's shapes (1024 tokens; the BEiT
layers and the projection), torch's F.linear vs maven_fast's ``cpu`` backend
(maven_fast.ops.linear: the CPU ops' GEMM dispatch), on the same inputs, forward
and forward+backward, GFLOP/s against the machine's measured GEMM rate. The suite
itself is maven_fast.benchmark.linear_suite (also run by `maven-fast bench`).

    python bench/linear.py [--device cpu] [--dtype float32|bfloat16] [--quick] [--out bench/results]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from maven_fast.benchmark.linear_suite import QUICK_SHAPES, SHAPES, run_linear
from maven_fast.benchmark.roofline import measure_gemm_rate
from maven_fast.benchmark.script import parser, run_and_report


def main(argv=None) -> int:
    ap = parser(__doc__, Path(__file__).parent / "results")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)

    def run():
        rate = measure_gemm_rate(args.device, dtype)
        return run_linear(args.device, {dtype: rate}, QUICK_SHAPES if args.quick else SHAPES,
                          rounds=5 if args.quick else 10)

    return run_and_report("linear", args, run, "Linear layers benchmark", stem_extra=f"-{args.dtype}")


if __name__ == "__main__":
    sys.exit(main())
