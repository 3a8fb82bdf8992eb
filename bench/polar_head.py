"""Benchmark: the polar head (Linear(256->2) + bounded polar activation + VA +
masked MSE), eager PyTorch vs torch.compile(eager) vs every fused backend, on
the same inputs, forward and forward+backward.

Bytes moved (the op is memory-bound): forward reads x (N*D elements) and writes
4N outputs; forward+backward reads x twice and writes dx (N*D): we report the
effective bandwidth 3*N*D*elem_size / time for fwd+bwd and N*D*elem_size / time
for the forward.

    python bench/polar_head.py [--device cpu|cuda] [--quick] [--out bench/results]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from maven_fast.backends import backend_problems
from maven_fast.benchmark import machine_description, machine_slug, time_interleaved, write_report
from maven_fast.ops import polar_head, polar_head_reference


def make_variants(device: str, dtype: torch.dtype):
    variants = {"eager": lambda *a: polar_head_reference(*a[:5], bounded=True)}
    compiled = torch.compile(lambda *a: polar_head_reference(*a[:5], bounded=True))
    variants["torch.compile(eager)"] = compiled
    if device == "cuda":
        variants["torch.compile(eager, reduce-overhead)"] = torch.compile(
            lambda *a: polar_head_reference(*a[:5], bounded=True), mode="reduce-overhead"
        )
    for backend in ("cpu", "cuda", "triton"):
        if not backend_problems(backend, device, dtype):
            if backend == "triton" and device == "cpu":
                continue  # the interpreter is a correctness tool, not a backend to time
            variants[f"maven_fast {backend}"] = (
                lambda *a, _b=backend: polar_head(*a[:5], bounded=True, backend=_b)
            )
    return variants


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and rounds")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    device = args.device
    d = 256
    sizes = [1024, 16384] if args.quick else [1024, 4096, 16384, 65536]
    rounds = 7 if args.quick else 15
    variants = make_variants(device, dtype)
    rows = []
    for n in sizes:
        x = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
        w = (torch.randn(2, d, device=device) / d**0.5).to(dtype).requires_grad_()
        b = torch.zeros(2, device=device, dtype=dtype, requires_grad=True)
        target = torch.rand(n, 2, device=device) * 2 - 1
        mask = torch.rand(n, device=device) > 0.1
        ref = polar_head_reference(x.double(), w.double(), b.double(), target, mask)
        for mode in ("forward", "forward+backward"):
            fns = {}
            for name, fn in variants.items():
                out = fn(x, w, b, target, mask)
                err = (out.valence_arousal.double() - ref.valence_arousal).abs().max().item()
                tol = 1e-4 if dtype == torch.float32 else 2e-2
                if err > tol:
                    raise SystemExit(f"{name}: output differs from the reference by {err:.3g} (> {tol}); not timing it")
                if mode == "forward":
                    fns[name] = lambda fn=fn: fn(x.detach(), w.detach(), b.detach(), target, mask)
                else:
                    def step(fn=fn):
                        o = fn(x, w, b, target, mask)
                        torch.autograd.grad(o.loss + o.valence_arousal.sum(), (x, w, b))
                    fns[name] = step
            timings = time_interleaved(fns, device, rounds=rounds)
            base = timings["eager"].median
            nbytes = (1 if mode == "forward" else 3) * n * d * x.element_size()
            for name, t in timings.items():
                rows.append([n, mode, name, t.median, t.p20, t.p80, base / t.median, nbytes / (t.median * 1e-3) / 1e9])
    header = ["N", "pass", "variant", "median ms", "p20 ms", "p80 ms", "speed-up vs eager", "GB/s"]
    machine = machine_description()
    stem = f"polar_head-{machine_slug(device)}-{args.dtype}-{machine['date']}"
    md, csv_path = write_report(
        args.out, stem, f"Polar head benchmark ({device}, {args.dtype}, D={d})", machine, header, rows,
        notes=[
            "Same inputs for every variant; each variant's output is checked against an fp64 reference before timing.",
            "Interleaved rounds after warm-up; median and p20/p80 of per-call time; compile time excluded.",
            "GB/s counts x once (forward) or three times (x read twice + dx written) for forward+backward.",
        ],
    )
    print(md.read_text())
    print(f"written: {md} and {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
