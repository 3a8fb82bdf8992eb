"""Profile: where the fused cross-modal block's forward+backward spends its time, stage by stage.

The cross-modal benchmark (bench/cross_modal.py) says how fast the block is and
what share of the GEMM rate it reaches; this says what bounds that share. One
case of the benchmark (same inputs, weights, batch 16, D = 512, H = 2), the
fused backend, ``--steps`` forward+backward calls under torch.profiler. The op
names its stages (``maven_fast::cross_modal.<pass>.<stage>``, docs/bench.md);
per stage:

    GEMM ms       time of its GEMM children: aten::mm / aten::addmm (FLOPs from their shapes), and
                  maven_fast::bf16_gemm / maven_fast::fp32_gemm, the op's own GEMM kernels (bf16 on
                  an AVX512-BF16 CPU, fp32 on an AVX2 CPU: csrc/common/cpu_gemm.h; FLOPs recorded
                  as their input)
    own ms        the stage's self time: the op's own kernels (attention, combine) and glue
    other ms      every other child op (casts, sums, copies)

and the bounds the GEMMs put on the block's share of the GEMM rate:

    share   = executed FLOPs / block time / GEMM rate
    bound_1 = executed FLOPs / GEMM time / GEMM rate                       (all else at zero)
    bound_2 = executed FLOPs / (GEMM time + F_att / GEMM rate) / GEMM rate (the attention at
              the full GEMM rate, glue at zero)

Executed FLOPs are the benchmark's (cross_modal_executed_flops: padded steps
counted, x3 with backward). F_att is what the attention kernels perform: 7
products (2 forward, 5 backward) of 2 Tq len_b d FLOPs per pathway, item b and
head, on the item's valid keys only (d = D / H per head, or D for each of the
H heads of an absorbed pathway).

with the GEMM rate measured in this run for the case's dtype (roofline.measure_gemm_rate).

    python bench/profile_cross_modal.py [--case "paper (64, 100, 32) bf16"] [--steps 10] [--out bench/results]

Writes <out>/cross-modal-profile-<machine>-<date>-<case slug>.md.
"""
from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from maven_fast.backends import backend_problems
from maven_fast.benchmark.cross_modal_suite import (BATCH, CASES, EMBED, HEADS, _params, fused_block, fused_plan,
                                                    make_block_module, make_inputs)
from maven_fast.benchmark.flops import cross_modal_executed_flops, gemm_flops
from maven_fast.benchmark.machine import machine_slug
from maven_fast.benchmark.roofline import bf16_matmul_support, measure_gemm_rate
from maven_fast.ops.cross_modal import ABSORBED, GENERAL, KEY, QUERY

STAGE_PREFIX = "maven_fast::cross_modal."
ATEN_GEMMS = {"aten::mm": (0, 1), "aten::addmm": (1, 2)}  # op -> positions of A and B in its inputs
# a group of products on the op's own kernels (csrc/common/cpu_gemm.cpp); input: its FLOPs
OWN_GEMMS = ("maven_fast::bf16_gemm", "maven_fast::fp32_gemm")
GEMM_OPS = (*ATEN_GEMMS, *OWN_GEMMS)


def gemm_event_flops(event) -> int:
    """2 M N K of an aten::mm / aten::addmm event from its recorded input shapes; the FLOPs a
    maven_fast::bf16_gemm / fp32_gemm event records as its input."""
    if event.name in OWN_GEMMS:
        return int(event.concrete_inputs[0])
    ia, ib = ATEN_GEMMS[event.name]
    a, b = event.input_shapes[ia], event.input_shapes[ib]
    return gemm_flops(a[0], b[1], a[1])


def stage_table(events, steps: int) -> dict[str, dict[str, float]]:
    """Per stage: total, own (self), GEMM and other ms per step, and GEMM GFLOP per step."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in events:
        if not e.name.startswith(STAGE_PREFIX):
            continue
        row = rows[e.name[len(STAGE_PREFIX):]]
        row["total"] += e.cpu_time_total / 1e3 / steps
        row["own"] += e.self_cpu_time_total / 1e3 / steps
        for c in e.cpu_children:
            kind = "gemm" if c.name in GEMM_OPS else "other"
            row[kind] += c.cpu_time_total / 1e3 / steps
            if kind == "gemm":
                row["gflop"] += gemm_event_flops(c) / 1e9 / steps
    return rows


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[n // 2]


def attention_flops_performed(t: tuple[int, int, int], lens, modes, embed: int, heads: int) -> int:
    """F_att: 7 products x 2 Tq len_b d per pathway, item and head, on the valid keys only
    (``lens``: the three key-length tensors [B])."""
    total = 0
    for p, mode in enumerate(modes):
        if mode not in (GENERAL, ABSORBED):
            continue
        keys = int(lens[KEY[p]].sum())  # valid keys over the batch
        width = embed * (heads if mode == ABSORBED else 1)  # summed over the heads
        total += 7 * 2 * t[QUERY[p]] * keys * width
    return total


@dataclass
class CaseProfile:
    case: str
    batch: int
    embed: int
    steps: int
    wall_ms: float                          # unprofiled median of one forward+backward
    rows: dict[str, dict[str, float]]       # stage_table
    flops: int                              # executed FLOPs (the benchmark's convention)
    attention_flops: int                    # F_att
    modes: list[int]


def profile_case(case_name: str, steps: int, batch: int = BATCH, embed: int = EMBED) -> CaseProfile:
    case = CASES[case_name]
    tv, ta, tt = case.steps
    torch.manual_seed(0)
    module = make_block_module(embed, HEADS, 0).to(case.dtype)
    fused = fused_block(module, "cpu").to(case.dtype)
    xs, lens, cot = make_inputs(tv, ta, tt, case.lengths, torch.device("cpu"), batch, embed, 0, case.dtype)
    params = _params(fused)[1]

    def step():
        out = fused.block(*xs, *lens) if case.lengths else fused.block(*xs)
        torch.autograd.grad(out, xs + params, grad_outputs=cot, allow_unused=True)

    for _ in range(3):
        step()
    wall = median_ms(step, max(5, steps))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    modes = fused_plan(tv, ta, tt, embed, HEADS, "cpu", dtype=case.dtype)
    flops = cross_modal_executed_flops(batch, embed, HEADS, tv, ta, tt, modes, backward=True)
    key_lens = lens if case.lengths else [torch.full((batch,), t) for t in case.steps]
    return CaseProfile(case_name, batch, embed, steps, wall, stage_table(prof.events(), steps), flops,
                       attention_flops_performed(case.steps, key_lens, modes, embed, HEADS), modes)


def render(prof: CaseProfile, rate: float, dtype: torch.dtype) -> str:
    case_name, steps, wall, rows, flops, modes = prof.case, prof.steps, prof.wall_ms, prof.rows, prof.flops, prof.modes
    gemm_ms = sum(r["gemm"] for r in rows.values())
    own_ms = sum(r["own"] for r in rows.values())
    other_ms = sum(r["other"] for r in rows.values())
    gemm_gflop = sum(r["gflop"] for r in rows.values())
    profiled = sum(r["total"] for r in rows.values())
    share = flops / (wall * 1e-3) / 1e9 / rate
    bound = flops / (gemm_ms * 1e-3) / 1e9 / rate
    attention_ms = prof.attention_flops / 1e9 / rate * 1e3
    bound_2 = flops / ((gemm_ms + attention_ms) * 1e-3) / 1e9 / rate
    lines = [f"# Cross-modal block profile: {case_name}, cpu, batch {prof.batch}, D = {prof.embed}, H = {HEADS}",
             "",
             f"{datetime.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"python bench/profile_cross_modal.py --case \"{case_name}\" --steps {steps}. Fused backend, "
             f"forward+backward; pathway modes (v2a, v2t, a2v, a2t, t2v, t2a; 0 general, 1 key length 1, "
             f"2 absorbed): {modes}. Per step, under torch.profiler (it adds a little to every op; the block "
             "time is unprofiled).", "",
             "| stage | total ms | GEMM ms | GEMM GFLOP | GEMM GFLOP/s | own kernels ms | other ATen ms |",
             "|---|---|---|---|---|---|---|"]
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["total"]):
        rate_cell = f"{r['gflop'] / (r['gemm'] * 1e-3):.0f}" if r["gemm"] > 0 else "-"
        lines.append(f"| {name} | {r['total']:.2f} | {r['gemm']:.2f} | {r['gflop']:.2f} | {rate_cell} | "
                     f"{r['own']:.2f} | {r['other']:.2f} |")
    lines.append(f"| **all stages** | **{profiled:.2f}** | **{gemm_ms:.2f}** | **{gemm_gflop:.2f}** | "
                 f"**{gemm_gflop / (gemm_ms * 1e-3):.0f}** | **{own_ms:.2f}** | **{other_ms:.2f}** |")
    lines += ["",
              f"- Block forward+backward, unprofiled median: {wall:.1f} ms; executed FLOPs "
              f"(cross_modal_executed_flops): {flops / 1e9:.2f} GFLOP; GEMM rate measured in this run "
              f"({'bf16' if dtype == torch.bfloat16 else 'fp32'}): {rate:.0f} GFLOP/s.",
              f"- Share of the GEMM rate: {100 * share:.0f}%.",
              f"- Bound from the GEMMs alone (own kernels and other ATen ops at zero): {flops / 1e9:.2f} GFLOP / "
              f"{gemm_ms:.1f} ms = {flops / (gemm_ms * 1e-3) / 1e9:.0f} GFLOP/s = {100 * bound:.0f}% of the "
              "GEMM rate.",
              f"- Bound with the attention's {prof.attention_flops / 1e9:.2f} GFLOP (F_att: the products its "
              f"kernels perform, valid keys only) at the full GEMM rate ({attention_ms:.1f} ms) and the rest at "
              f"zero: {flops / 1e9:.2f} GFLOP / "
              f"{gemm_ms + attention_ms:.1f} ms = {100 * bound_2:.0f}% of the GEMM rate. Past this share the block "
              "needs faster GEMMs at its shapes (or attention faster than the GEMM rate)."]
    return "\n".join(lines) + "\n"


def slug(case_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", case_name.lower()).strip("-")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The paper cases: their GEMMs are ATen's (bf16 on an AVX512-BF16 CPU: the op's bf16 kernels).
    # reference_mlp's few-row products run in the op's own skinny kernels (bound by memory, not by
    # a GEMM rate; see its GB/s in the benchmark).
    cases = [n for n, c in CASES.items() if "cpu" in c.devices and n.startswith("paper")]
    ap.add_argument("--case", default="paper (64, 100, 32) bf16", choices=cases,
                    help="a CPU paper case of the cross-modal benchmark (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=10, help="profiled forward+backward calls (default 10)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="report folder")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    dtype = CASES[args.case].dtype
    if dtype == torch.bfloat16 and bf16_matmul_support("cpu") is not None:
        ap.error(f"--case {args.case!r} needs a CPU with native bf16 matmuls: {bf16_matmul_support('cpu')}")
    problems = backend_problems("cpu", "cpu", dtype)
    if problems:
        ap.error("the fused cpu backend cannot run here: " + "; ".join(problems))
    rate = measure_gemm_rate("cpu", dtype)
    text = render(profile_case(args.case, args.steps), rate, dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cross-modal-profile-{machine_slug()}-{datetime.date.today()}-{slug(args.case)}.md"
    path.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
