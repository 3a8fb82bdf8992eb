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

import argparse
import sys
from pathlib import Path

import torch

from maven_fast.benchmark import machine_description, machine_slug, write_report
from maven_fast.benchmark.cross_modal_suite import CASES, QUICK_CASES, run_cross_modal
from maven_fast.benchmark.results import VariantMismatch
from maven_fast.benchmark.roofline import measure_machine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="the small cases only, fewer rounds")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    rates = measure_machine(args.device)
    try:
        result = run_cross_modal(args.device, QUICK_CASES if args.quick else tuple(CASES),
                                 rounds=5 if args.quick else 10, gemm_gflops=rates["gemm_fp32"][0], rates=rates)
    except VariantMismatch as exc:
        print(f"cross_modal: {exc}", file=sys.stderr)
        return 1
    (table,) = result.section.tables
    machine = machine_description()
    stem = f"cross_modal-{machine_slug(args.device)}-{machine['date']}" + ("-quick" if args.quick else "")
    notes = [f"measured in this run: {name} {value if value is None else round(value)} ({how})"
             for name, (value, how) in rates.items()] + table.notes
    md, csv_path = write_report(args.out, stem, f"Cross-modal block benchmark ({table.title})", machine,
                                table.header, table.rows, notes=notes)
    print(md.read_text())
    print(f"written: {md} and {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
