"""Benchmark: samples/s of a full MAVEN training step (forward + loss + backward +
clip_grad_norm_(1.0) + Adam) for the reference_mlp and paper presets at full
size (D=512, 2 heads, encoder widths 1024/768/768, batch 16; reference_mlp:
Tv=64 with pooled audio/text; paper: (Tv, Ta, Tt) = (64, 100, 32)), from random
inputs of the cached features' shapes, same batch, weights and seed for every
variant: eager, torch.compile(eager) (compile time separate) and every fused
backend the model can run (the others are listed with the reason), in fp32 and
(eager and fused) in bf16 autocast.

Each variant's loss and gradients are checked against eager fp32 (dropout off)
before timing (bf16: within 2x eager bf16's RMS error). GFLOP/s uses maven_step_flops (maven_fast/benchmark/flops.py):
3x the forward FLOPs of every Linear and attention product, less the modality
projections' input gradients. The suite is
maven_fast.benchmark.train_step_suite (also run by `maven-fast bench`).

    python bench/train_step.py [--device cpu|cuda] [--quick] [--out bench/results]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from maven_fast.benchmark.roofline import bf16_matmul_support, measure_gemm_rate
from maven_fast.benchmark.script import parser, run_and_report
from maven_fast.benchmark.train_step_suite import run_train_step


def main(argv=None) -> int:
    args = parser(__doc__, Path(__file__).parent / "results").parse_args(argv)
    gemm = measure_gemm_rate(args.device, torch.float32)
    gemm_bf16 = None if bf16_matmul_support(args.device) else measure_gemm_rate(args.device, torch.bfloat16)
    presets = ("reference_mlp",) if args.quick else ("reference_mlp", "paper")
    return run_and_report(
        "train_step", args,
        lambda: run_train_step(args.device, presets, rounds=3 if args.quick else 7, gemm_gflops=gemm,
                               include_compile=not args.quick, gemm_bf16_gflops=gemm_bf16,
                               bf16_presets=None if gemm_bf16 else ("reference_mlp",),
                               bf16_left_out_reason=f"{bf16_matmul_support(args.device)}, which makes this "
                                                    "preset's step many times slower"),
        "Training step benchmark", notes=[f"fp32 GEMM rate measured in this run: {gemm:.0f} GFLOP/s; bf16: "
                                             + (f"{gemm_bf16:.0f} GFLOP/s" if gemm_bf16 else
                                                f"not measured ({bf16_matmul_support(args.device)})")])


if __name__ == "__main__":
    sys.exit(main())
