"""Roofline ESTIMATES (not measurements) of the fused cross-modal block per
benchmark case on an H100 SXM: the floor (peak compute or memory, whichever
binds), the expected time of the tensor-core CUDA kernels and of the SIMT ones,
from FLOP counts and assumed achievable rates. Prints a Markdown table
(docs/bench.md holds its output); a GPU run of bench/gpu.sh replaces it.

    .venv/bin/python bench/roofline_estimate.py

Assumptions (each an estimate): bf16 tensor-core peak 989 TFLOP/s, fp32 CUDA-core
peak 67 TFLOP/s, HBM 3.35 TB/s; cuBLAS projections at 60 % of the dtype's peak
(fp32 GEMMs: CUDA cores, TF32 off as in torch's default); the mma.sync attention
at 35 % of the bf16 peak (FlashAttention-2's range on Hopper); the SIMT attention
at 40 % of the fp32 peak; 3 us per kernel launch on the device's queue.
"""
from __future__ import annotations

import math

import torch

from maven_fast.benchmark.cross_modal_suite import BATCH, CASES, EMBED, HEADS
from maven_fast.benchmark.flops import cross_modal_bytes
from maven_fast.ops.cross_modal import ABSORBED, GENERAL, KEY, QUERY, plan_pathways

PEAK = {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12}
HBM = 3.35e12
GEMM_EFF, TC_ATTN_EFF, SIMT_ATTN_EFF = 0.60, 0.35, 0.40
LAUNCH_S = 3e-6
SIMT_CHUNK = 128  # column chunk of the SIMT kernels at head sizes > 64


def attention_flops(tx: int, ty: int, d: int, heads: int, backward: bool, kernels: str) -> float:
    """Executed attention FLOPs of one general pathway per batch item (multiply-add = 2).

    Tensor cores: forward S, PV = 4 Tx Ty D; backward dQ kernel S, dP, dQ and dK/dV
    kernel S, dP, dV, dK = 14 Tx Ty D. SIMT: S (and dP) recomputed per column
    chunk of n = ceil(d_head / 128): forward (2 n + 2) Tx Ty D, backward
    (4 n + 2) + (4 n + 4) Tx Ty D."""
    n = math.ceil(d / heads / SIMT_CHUNK)
    if kernels == "tc":
        f = 4 + (14 if backward else 0)
    else:
        f = (2 * n + 2) + ((8 * n + 6) if backward else 0)
    return f * tx * ty * d


def projection_flops(tx: int, ty: int, d: int, backward: bool) -> float:
    return 2 * d * d * (2 * tx + 2 * ty) * (3 if backward else 1)


def estimate(case: str, backward: bool, dtype: torch.dtype) -> dict[str, float]:
    """Times in us of the block on ``dtype`` inputs (bf16: as training runs it under autocast)."""
    t = CASES[case].steps
    modes = plan_pathways(*t, EMBED, HEADS, device_type="cuda", backend="cuda", dtype=dtype)
    bwd = 3 if backward else 1
    attn = {"tc": 0.0, "simt": 0.0}
    simt_only = gemm = 0.0
    for p, mode in enumerate(modes):
        tx, ty = t[QUERY[p]], t[KEY[p]]
        if mode == GENERAL:
            gemm += projection_flops(tx, ty, EMBED, backward)
            for k in attn:
                attn[k] += attention_flops(tx, ty, EMBED, HEADS, backward, k)
        elif mode == ABSORBED:  # Q, W_k fold, W_v, out_proj; attention on raw keys (SIMT kernels)
            gemm += 8 * tx * EMBED * EMBED * bwd
            simt_only += 4 * HEADS * tx * ty * EMBED * (4.5 if backward else 1)
        else:  # key length 1: V of the one key and out_proj, once per item
            gemm += 4 * EMBED * EMBED * bwd
    gemm, simt_only = BATCH * gemm, BATCH * simt_only
    attn = {k: BATCH * v for k, v in attn.items()}
    nbytes = cross_modal_bytes(BATCH, EMBED, *t, torch.tensor([], dtype=dtype).element_size(), backward)
    launches = 16 if backward else 6
    peak = PEAK[dtype]
    useful = gemm + simt_only + attn["tc"] * (12 / 18 if backward else 1)
    floor = max(useful / peak, nbytes / HBM)
    gemm_s = gemm / (GEMM_EFF * peak) + simt_only / (SIMT_ATTN_EFF * PEAK[torch.float32]) + launches * LAUNCH_S
    tc_s = gemm_s + attn["tc"] / (TC_ATTN_EFF * PEAK[torch.bfloat16])
    simt_s = gemm_s + attn["simt"] / (SIMT_ATTN_EFF * PEAK[torch.float32])
    return {"gflop": (gemm + simt_only + attn["tc"]) / 1e9, "floor": floor * 1e6, "tc": tc_s * 1e6,
            "simt": simt_s * 1e6, "tc_applies": dtype != torch.float32}


def main() -> None:
    print(f"Estimates (not measurements), H100 SXM, B={BATCH}, D={EMBED}, H={HEADS}, CUDA backend, "
          "microseconds:\n")
    print("| case | pass | dtype | executed GFLOP | floor | tensor-core kernels | SIMT kernels (today's estimate) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for case, spec in CASES.items():
        for dtype in dict.fromkeys((spec.dtype, torch.bfloat16)):
            for backward in (False, True):
                e = estimate(case, backward, dtype)
                tc = f"{e['tc']:.0f}" if e["tc_applies"] else "n/a (fp32)"
                name = "bf16 (autocast)" if dtype != spec.dtype else str(dtype).replace("torch.", "")
                print(f"| {case} | {'fwd+bwd' if backward else 'fwd'} | {name} | {e['gflop']:.1f} | "
                      f"{e['floor']:.0f} | {tc} | {e['simt']:.0f} |")


if __name__ == "__main__":
    main()
