"""Benchmark: the six-pathway cross-modal block (pathways + combination +
LayerNorm on projected sequences, B=16, D=512, H=2, dropout 0), the same work
done by eager (six nn.MultiheadAttention), eager+SDPA, torch.compile(eager)
(and reduce-overhead on GPU), SDPA flash (GPU, packed bf16 case) and every
fused backend, forward and forward+backward.

Cases: reference_mlp (64, 1, 1), paper (64, 100, 32), (256, 400, 64); on the
GPU also paper (64, 64, 32) and the packed T = 512 problem in bf16. Each
variant's outputs and gradients are checked against an fp64 eager block
before timing. CPU: GFLOP/s and % of the fp32 GEMM rate measured in this run.
GPU: device time by CUDA events, host-inclusive latency of one call, TFLOP/s
and % of the roofline (GEMM rate and copy bandwidth measured in this run).
FLOP and byte formulas: maven_fast/benchmark/flops.py. The suite is
maven_fast.benchmark.cross_modal_suite (also run by `maven-fast bench`).

    python bench/cross_modal.py [--device cpu|cuda] [--quick] [--out bench/results]
"""
from __future__ import annotations

import sys
from pathlib import Path

from maven_fast.benchmark.cross_modal_suite import CASES, QUICK_CASES, run_cross_modal
from maven_fast.benchmark.roofline import measure_machine
from maven_fast.benchmark.script import parser, run_and_report


def main(argv=None) -> int:
    args = parser(__doc__, Path(__file__).parent / "results").parse_args(argv)
    rates = measure_machine(args.device)
    notes = [f"measured in this run: {name} {value if value is None else round(value)} ({how})"
             for name, (value, how) in rates.items()]
    return run_and_report(
        "cross_modal", args,
        lambda: run_cross_modal(args.device, QUICK_CASES if args.quick else tuple(CASES),
                                rounds=5 if args.quick else 10, gemm_gflops=rates["gemm_fp32"][0], rates=rates),
        "Cross-modal block benchmark", notes=notes)


if __name__ == "__main__":
    sys.exit(main())
