"""Benchmark of the cross-modal block (SPEC 3.1 / 6): the same work done by

  eager_mha     six nn.MultiheadAttention modules called as the original MAVEN
                code calls them (need_weights left at its default), the
                (x + a + b) / 3 sum, the shared Dropout and LayerNorm
  eager_sdpa    the same block written with F.linear + F.scaled_dot_product_attention
  compile       torch.compile (default mode) of the eager_mha block
  cpu           maven_fast's fused C++ op (torch.ops.maven_fast.cross_modal_block)
                with its automatic structural shortcuts
  cpu_general   the same op with the shortcuts disabled (every pathway general)

for B=16, D=512, H=2 at the reference_mlp shapes (Tv=64, pooled audio/text,
Ta=Tt=1) and the paper shapes (Tv, Ta, Tt) = (64, 100, 32), (256, 400, 64),
forward and forward+backward (gradients of the inputs and all parameters).
Dropout probabilities are 0 (the outputs of every variant must agree; dropout
masks of different generators cannot), in training mode.

Every variant's outputs (and, for forward+backward, its gradients) are checked
against maven_fast.ops.cross_modal_reference before anything is timed.
Timing: rounds that run every variant once, in turn (so machine noise spreads
over all of them); median, p20 and p80 per variant.

FLOPs (the work of the block, multiply-add = 2 FLOPs), per pathway x2y with
Tx query and Ty key steps, summed over the six pathways:
  forward  = 2 B D^2 (2 Tx + 2 Ty)          Q, K, V and out projections
           + 4 B Tx Ty D                    Q K^T and P V
  forward+backward = 3 x forward
GFLOP/s below is that work divided by the time, whatever a variant actually
executes; `executed` gives the FLOPs the fused op really performs with its
shortcuts (same formula with the projections and attention it skips left
out). The GEMM rate is torch.mm on float32 [B*Tv, D] x [D, 3D] measured in
the same run, interleaved with the rounds.

  python bench/cross_modal.py            # full (a few minutes on 2 cores)
  python bench/cross_modal.py --quick    # fewer rounds, smaller paper shape only
Writes bench/results/cross_modal.{md,csv} (or --out PREFIX) and prints the table.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from maven_fast.ops.cross_modal import (
    ABSORBED,
    GENERAL,
    KEY_LEN_1,
    PATHWAYS,
    CrossModalParams,
    cross_modal_block,
    cross_modal_reference,
    plan_pathways,
)

B, D, H = 16, 512, 2
_Q = (0, 0, 1, 1, 2, 2)
_K = (1, 2, 0, 2, 0, 1)
SHAPES = {
    "reference_mlp": (64, 1, 1),
    "paper_64_100_32": (64, 100, 32),
    "paper_256_400_64": (256, 400, 64),
}


# --------------------------------------------------------------------------- FLOPs
def block_flops(t: tuple[int, int, int]) -> float:
    total = 0.0
    for p in range(6):
        tx, ty = t[_Q[p]], t[_K[p]]
        total += 2 * B * D * D * (2 * tx + 2 * ty) + 4 * B * tx * ty * D
    return total


def executed_flops(t: tuple[int, int, int], modes: list[int]) -> float:
    total = 0.0
    for p, mode in enumerate(modes):
        tx, ty = t[_Q[p]], t[_K[p]]
        if mode == GENERAL:
            total += 2 * B * D * D * (2 * tx + 2 * ty) + 4 * B * tx * ty * D
        elif mode == KEY_LEN_1:  # V projection and out_proj once per item
            total += 2 * B * D * D * 2
        elif mode == ABSORBED:  # Q, W_k fold, W_v, out_proj; attention of head size D per head
            total += 2 * B * D * D * 4 * tx + 4 * H * B * tx * ty * D
    return total


# --------------------------------------------------------------------------- variants
class EagerBlock(nn.Module):
    """The original MAVEN cross-modal block after the modality projections."""

    def __init__(self):
        super().__init__()
        for p in PATHWAYS:
            setattr(self, f"attn_{p}", nn.MultiheadAttention(D, H, dropout=0.0, batch_first=True))
        self.layer_norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x_v, x_a, x_t, m_v, m_a, m_t):
        xs, masks = (x_v, x_a, x_t), (m_v, m_a, m_t)
        outs = [getattr(self, f"attn_{p}")(xs[_Q[i]], xs[_K[i]], xs[_K[i]], key_padding_mask=masks[_K[i]])[0]
                for i, p in enumerate(PATHWAYS)]
        return tuple(self.layer_norm(self.dropout((xs[m] + outs[2 * m] + outs[2 * m + 1]) / 3)) for m in range(3))


def sdpa_block(block: EagerBlock, x_v, x_a, x_t, m_v, m_a, m_t):
    xs, masks = (x_v, x_a, x_t), (m_v, m_a, m_t)
    outs = []
    for i, p in enumerate(PATHWAYS):
        mha = getattr(block, f"attn_{p}")
        wq, wk, wv = mha.in_proj_weight.chunk(3)
        bq, bk, bv = mha.in_proj_bias.chunk(3)
        q, k, v = F.linear(xs[_Q[i]], wq, bq), F.linear(xs[_K[i]], wk, bk), F.linear(xs[_K[i]], wv, bv)
        split = lambda t: t.unflatten(-1, (H, D // H)).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=~masks[_K[i]][:, None, None, :])
        outs.append(mha.out_proj(o.transpose(1, 2).flatten(2)))
    return tuple(block.layer_norm(block.dropout((xs[m] + outs[2 * m] + outs[2 * m + 1]) / 3)) for m in range(3))


def make_variants(block: EagerBlock, lens, quick: bool):
    prm = CrossModalParams.from_modules({p: getattr(block, f"attn_{p}") for p in PATHWAYS}, block.layer_norm)

    def masks(xs):
        return [torch.arange(x.shape[1])[None, :] >= l[:, None] for x, l in zip(xs, lens)]

    compiled = torch.compile(block)
    variants = {
        "eager_mha": lambda xs: block(*xs, *masks(xs)),
        "eager_sdpa": lambda xs: sdpa_block(block, *xs, *masks(xs)),
        "compile": lambda xs: compiled(*xs, *masks(xs)),
        "cpu": lambda xs: cross_modal_block(*xs, *lens, params=prm, training=True, backend="cpu"),
        "cpu_general": lambda xs: cross_modal_block(*xs, *lens, params=prm, training=True, backend="cpu",
                                                    shortcuts=False),
    }
    return variants, prm


# --------------------------------------------------------------------------- timing
def gemm_rate(m: int) -> float:
    a, w = torch.randn(m, D), torch.randn(D, 3 * D)
    torch.mm(a, w)
    t0 = time.perf_counter()
    torch.mm(a, w)
    return 2 * m * D * 3 * D / (time.perf_counter() - t0) / 1e9


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_shape(name, t, rounds, warmup, params_of, check_only=False):
    torch.manual_seed(0)
    block = EagerBlock().train()
    with torch.no_grad():  # non-trivial LayerNorm and biases
        block.layer_norm.weight.normal_(1.0, 0.1)
        block.layer_norm.bias.normal_(0.0, 0.1)
        for p in PATHWAYS:
            getattr(block, f"attn_{p}").in_proj_bias.normal_(0.0, 0.1)
            getattr(block, f"attn_{p}").out_proj.bias.normal_(0.0, 0.1)
    xs = [torch.randn(B, ti, D, requires_grad=True) for ti in t]
    lens = [torch.full((B,), ti, dtype=torch.long) for ti in t]
    # Padding in the sequences that have it (never fewer than 1 valid key).
    for l, ti in zip(lens, t):
        if ti > 1:
            l[1::2] = max(1, (3 * ti) // 4)
    variants, prm = make_variants(block, lens, False)
    params = list(block.parameters())
    grads_out = [torch.randn(B, ti, D) for ti in t]

    # Reference values and gradients.
    ref = cross_modal_reference(*xs, *lens, prm, 0.0, True, 0.0)
    ref_grads = torch.autograd.grad(ref, xs + params, grads_out)

    def fwd(fn):
        with torch.no_grad():
            return fn(xs)

    def fwd_bwd(fn):
        for p in params + xs:
            p.grad = None
        out = fn(xs)
        torch.autograd.backward(out, grads_out)
        return out

    # Correctness gate.
    for vname, fn in variants.items():
        out = fn(xs)
        g = torch.autograd.grad(out, xs + params, grads_out)
        err = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item() for a, b in zip(out, ref))
        gerr = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item() for a, b in zip(g, ref_grads))
        if err > 1e-4 or gerr > 1e-3:
            raise SystemExit(f"{name}/{vname}: differs from the reference (rel. err {err:.2e}, grads {gerr:.2e})")
        print(f"  {name}/{vname}: matches the reference (rel. err {err:.1e}, grads {gerr:.1e})", flush=True)
    if check_only:
        return []

    results = []
    gemm = []
    for mode, runner in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        times = {v: [] for v in variants}
        for _ in range(warmup):
            for fn in variants.values():
                runner(fn)
        for _ in range(rounds):
            for vname, fn in variants.items():
                t0 = time.perf_counter()
                runner(fn)
                times[vname].append(time.perf_counter() - t0)
            gemm.append(gemm_rate(B * t[0]))
        for vname, ts in times.items():
            results.append((name, t, mode, vname, ts))
    return results, gemm


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        if "avx512_bf16" in flags:
            model += " (avx512_bf16)"
    except (OSError, StopIteration):
        pass
    load = ", load average %.1f at the end" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} logical CPUs{load}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few rounds; skip the (256, 400, 64) shape")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cross_modal"))
    args = ap.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    warmup = 2
    shapes = dict(SHAPES)
    if args.quick:
        shapes.pop("paper_256_400_64")
        args.out = args.out + "_quick" if args.out.endswith("cross_modal") else args.out

    rows, gemm_all = [], []
    for name, t in shapes.items():
        print(f"{name} {t}: checking, then {rounds} rounds", flush=True)
        res, gemm = run_shape(name, t, rounds, warmup, None)
        gemm_all.extend(gemm)
        g_med = statistics.median(gemm)
        modes = plan_pathways(*t, D, H)
        for (sname, st, mode, vname, ts) in res:
            mult = 1 if mode == "fwd" else 3
            med = statistics.median(ts)
            base = statistics.median(next(r[4] for r in res if r[2] == mode and r[3] == "eager_mha"))
            flops = mult * block_flops(st)
            executed = mult * (executed_flops(st, modes) if vname == "cpu" else block_flops(st))
            rows.append({
                "shape": sname, "T (v,a,t)": f"{st}", "pass": mode, "variant": vname,
                "median_ms": med * 1e3, "p20_ms": pct(ts, 0.2) * 1e3, "p80_ms": pct(ts, 0.8) * 1e3,
                "speedup_vs_eager_mha": base / med,
                "GFLOP/s": flops / med / 1e9, "pct_of_gemm": 100 * flops / med / 1e9 / g_med,
                "executed_GFLOP": executed / 1e9, "gemm_GFLOP/s": g_med,
            })

    md = []
    md.append(f"# Cross-modal block, CPU (B={B}, D={D}, H={H}, float32, dropout 0, training mode)\n")
    md.append(f"Machine: {machine()}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"CPU capability {torch.backends.cpu.get_cpu_capability()}; "
              f"fp32 GEMM rate in this run: median {statistics.median(gemm_all):.0f} GFLOP/s "
              f"(p20 {pct(gemm_all, 0.2):.0f}, p80 {pct(gemm_all, 0.8):.0f}).\n")
    md.append(f"Modes chosen by the fused op (v2a, v2t, a2v, a2t, t2v, t2a; 0 general, 1 key length 1, "
              f"2 absorbed): " + "; ".join(f"{n} {plan_pathways(*t, D, H)}" for n, t in shapes.items()) + "\n")
    md.append("GFLOP/s and % of GEMM: the block's standard FLOPs (see the docstring) over the median time. "
              "executed: FLOPs the variant performs.\n")
    hdr = ["shape", "pass", "variant", "median ms", "p20 ms", "p80 ms", "x eager_mha", "GFLOP/s", "% GEMM",
           "executed GFLOP"]
    md.append("| " + " | ".join(hdr) + " |")
    md.append("|" + "---|" * len(hdr))
    for r in rows:
        md.append(f"| {r['shape']} {r['T (v,a,t)']} | {r['pass']} | {r['variant']} | {r['median_ms']:.2f} | "
                  f"{r['p20_ms']:.2f} | {r['p80_ms']:.2f} | {r['speedup_vs_eager_mha']:.2f} | "
                  f"{r['GFLOP/s']:.0f} | {r['pct_of_gemm']:.0f} | {r['executed_GFLOP']:.2f} |")
    text = "\n".join(md) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(text)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}", file=sys.stderr)


if __name__ == "__main__":
    main()
