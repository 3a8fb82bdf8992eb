"""Profile: where one full MAVEN training step spends its time, by kind of work.

The training-step benchmark (bench/train_step.py) says how fast a step is; this
says what the rest of the step is made of: GEMMs, the fused cross-modal op,
BEiT's attention, LayerNorm, GELU, softmax, interpolation onto the video
timeline, copies and casts, other element-wise passes, gradient clipping and
Adam. Same model, batch and weights as the benchmark (batch 16, full size,
dropout as the preset has it), one warm-up step, then ``--steps`` steps under
torch.profiler; self time of every aten / maven_fast op, grouped. The step's
share of the GEMM rate is its executed FLOPs (maven_step_flops) over its wall
time, against the machine's measured GEMM rate of that precision.

    python bench/profile_train_step.py [--preset paper] [--device cpu] [--steps 3] [--out bench/results]

Writes <out>/train-step-profile-<machine>-<date>-<preset>.md.

``--bare VARIANT`` (``"cpu bf16"``, ``"eager fp32"``, ...) runs that variant's
steps with no profiler attached and prints the median step time and the minor
page faults per step, for a sampling profiler outside the process (torch.profiler's
per-op times include each op's thread fork/join; a sampler's do not):

    perf record -F 499 -- python bench/profile_train_step.py --bare "cpu bf16" --steps 30
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from maven_fast.benchmark.flops import maven_step_flops
from maven_fast.benchmark.machine import machine_slug
from maven_fast.benchmark.roofline import bf16_matmul_support, measure_gemm_rate
from maven_fast.benchmark.train_step_suite import (BATCH, SHAPES, _initial_state, _model, make_batch, make_step)
from maven_fast.config import MavenConfig

#: (group, substrings of the op name) in order: the first group whose substring matches wins.
GROUPS = (
    ("fused cross-modal block", ("maven_fast::cross_modal",)),
    ("fused polar head", ("maven_fast::polar",)),
    # maven_fast's GEMM kernels (their profiler ranges, also inside the fused block) and its linear op
    ("GEMM", ("maven_fast::fp32_gemm", "maven_fast::bf16_gemm", "maven_fast::linear", "addmm", "aten::mm",
              "aten::bmm", "baddbmm", "mkldnn_matmul", "mkldnn_linear", "aten::dot")),
    ("other maven_fast ops", ("maven_fast::",)),
    ("attention (SDPA)", ("scaled_dot_product", "_flash_attention")),
    ("softmax", ("softmax",)),
    ("dropout masks", ("bernoulli", "dropout")),
    ("LayerNorm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("interpolation", ("upsample", "grid_sampler", "interp")),
    ("clip_grad_norm", ("_foreach_norm", "linalg_vector_norm", "clamp")),
    ("Adam", ("_foreach_", "_fused_adam", "addcdiv", "addcmul", "lerp", "sqrt")),
    ("copies and casts", ("copy_", "_to_copy", "contiguous", "clone", "cat", "stack", "index", "pad")),
    ("zero-fills and allocations", ("zero_", "fill_", "empty", "zeros", "ones")),
    ("element-wise and reductions", ("add", "mul", "sub", "div", "sum", "mean", "where", "masked", "neg",
                                     "pow", "tanh", "sigmoid", "mse", "threshold", "relu", "exp", "log")),
)
#: ops whose self time is their children's bookkeeping, not work of their own.
WRAPPERS = ("autograd::engine", "Optimizer.step", "Optimizer.zero_grad", "ProfilerStep", "## ")


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other"


def variant_step(cfg: MavenConfig, backend: str, amp: torch.dtype | None, device: torch.device):
    """One training step of the variant, as the training-step suite builds it (same model, batch, weights)."""
    tv, ta, tt = SHAPES[cfg.variant]
    model = _model(cfg, _initial_state(cfg, 0), device, backend)
    return make_step(model, model, make_batch(cfg, BATCH, tv, ta, tt, device), amp=amp)


def profile_variant(cfg: MavenConfig, backend: str, amp: torch.dtype | None, device: torch.device,
                    steps: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """(ms per step, self ms per step by group, self ms per step of the 8 largest ops and of the 5
    largest ops in no group) of one variant."""
    step = variant_step(cfg, backend, amp, device)
    step()  # warm-up: allocator, thread pools, one-time plans
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    groups: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = {}
    for event in prof.key_averages():
        if any(event.key.startswith(w) for w in WRAPPERS):
            continue
        ms = event.self_cpu_time_total / 1e3 / steps
        groups[group_of(event.key)] += ms
        ops[event.key] = ms
    top = dict(sorted(ops.items(), key=lambda kv: -kv[1])[:8])
    top_other = dict(sorted(((k, v) for k, v in ops.items() if group_of(k) == "other"), key=lambda kv: -kv[1])[:5])
    return wall_ms, dict(groups), top | {f"(other) {k}": v for k, v in top_other.items()}


def bare_steps(cfg: MavenConfig, backend: str, amp: torch.dtype | None, device: torch.device,
               steps: int) -> tuple[list[float], float]:
    """(ms of each step, minor page faults per step) of one variant, no profiler attached."""
    import resource

    step = variant_step(cfg, backend, amp, device)
    step()
    step()  # warm-up: allocator, thread pools, one-time plans, the optimizer's state
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps


def render(preset: str, device: torch.device, steps: int, results: dict, flops: int, rates: dict) -> str:
    lines = [f"# Training-step profile: {preset}, {device.type}, batch {BATCH}", "",
             f"{datetime.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"python bench/profile_train_step.py --preset {preset} --steps {steps}. Self time of each op under "
             "torch.profiler, per step, grouped (the profiler adds a little time to every op; the wall time is "
             "of the profiled steps). Step FLOPs (maven_step_flops, executed): "
             f"{flops / 1e9:.3g} GFLOP. GEMM rates measured in this run: "
             + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items() if v) + ".", ""]
    names = list(results)
    all_groups = sorted({g for _, gr, _ in results.values() for g in gr},
                        key=lambda g: -max(results[n][1].get(g, 0.0) for n in names))
    lines.append("| group | " + " | ".join(f"{n} ms (%)" for n in names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for g in all_groups:
        cells = []
        for n in names:
            wall, gr, _ = results[n]
            ms = gr.get(g, 0.0)
            cells.append(f"{ms:.1f} ({100 * ms / wall:.0f}%)" if ms >= 0.05 else "-")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    walls = [results[n][0] for n in names]
    lines.append("| **step wall time** | " + " | ".join(f"**{w:.1f}**" for w in walls) + " |")
    shares = []
    for n, w in zip(names, walls):
        rate = rates["bf16" if n.endswith("bf16") else "fp32"]
        shares.append(f"{100 * flops / (w * 1e-3) / 1e9 / rate:.0f}%" if rate else "n/a")
    lines.append("| step's share of the GEMM rate | " + " | ".join(shares) + " |")
    lines += ["", "Largest ops (self ms per step; `(other)`: the largest ops in no group):", ""]
    for n in names:
        top = results[n][2]
        lines.append(f"- {n}: " + "; ".join(f"`{k}` {v:.1f}" for k, v in top.items()))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per variant (default 3)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="report folder")
    ap.add_argument("--bare", metavar="VARIANT",
                    help="run only this variant ('eager fp32', 'cpu bf16', ...; 'cuda ...' on a GPU) with no "
                         "profiler attached and print its step times and page faults (for perf record); "
                         "writes no report")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    device = torch.device(args.device)
    cfg = MavenConfig.preset(args.preset)
    if args.bare is not None:
        backend, _, precision = args.bare.partition(" ")
        fused = "cuda" if device.type == "cuda" else "cpu"
        if backend not in ("eager", fused) or precision not in ("fp32", "bf16"):
            ap.error(f"--bare expects 'eager fp32', 'eager bf16', '{fused} fp32' or '{fused} bf16', got {args.bare!r}")
        times, faults = bare_steps(cfg, backend, torch.bfloat16 if precision == "bf16" else None, device, args.steps)
        print(f"{args.preset} {args.bare}: median {statistics.median(times):.1f} ms per step over {args.steps} "
              f"steps (min {min(times):.1f}); {faults:.0f} minor page faults per step")
        return 0
    native_bf16 = bf16_matmul_support(args.device) is None
    rates = {"fp32": measure_gemm_rate(args.device, torch.float32),
             "bf16": measure_gemm_rate(args.device, torch.bfloat16) if native_bf16 else None}
    fused = "cuda" if device.type == "cuda" else "cpu"
    variants = [("eager fp32", "eager", None), (f"{fused} fp32", fused, None)]
    if native_bf16:
        variants += [("eager bf16", "eager", torch.bfloat16), (f"{fused} bf16", fused, torch.bfloat16)]
    results = {}
    for name, backend, amp in variants:
        print(f"[profile] {args.preset} {name}: {args.steps} steps", file=sys.stderr)
        results[name] = profile_variant(cfg, backend, amp, device, args.steps)
    flops = maven_step_flops(cfg, BATCH, *SHAPES[cfg.variant])
    text = render(args.preset, device, args.steps, results, flops, rates)
    out = Path(args.out) / f"train-step-profile-{machine_slug(args.device)}-{datetime.date.today()}-{args.preset}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"[profile] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
