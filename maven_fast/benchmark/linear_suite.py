"""The linear suite: ``nn.Linear`` at the ``paper`` training step's shapes, torch's
``F.linear`` (eager: MKL / oneDNN on the CPU) against :func:`maven_fast.ops.linear`
(the ``cpu`` backend: the CPU ops' GEMM dispatch), forward and forward+backward.

Shapes are the BEiT layers' and the projection's at batch 16 x 64 frames (1024
tokens): query/key/value/output 768 -> 768, intermediate 768 -> 3072, output 3072 ->
768, projection 1536 -> 768. Every variant's output and gradients (x, W, b) are
checked against an fp64 evaluation of ``F.linear`` before timing. FLOPs: 2 M N K for
the forward, 6 M N K for forward+backward (dx and dW are one product each); GFLOP/s
also as a share of the machine's measured GEMM rate of the dtype.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from maven_fast.benchmark.checks import check_close
from maven_fast.benchmark.report import Section, Table
from maven_fast.benchmark.results import Skipped, SuiteResult, add_timed_rows, skipped_lines
from maven_fast.benchmark.timing import time_interleaved
from maven_fast.backends import backend_problems
from maven_fast.ops.linear import linear

NAME = "linear"
PASSES = ("forward", "forward+backward")
TOKENS = 1024
#: (label, in_features, out_features)
SHAPES = (("attention 768 -> 768", 768, 768), ("intermediate 768 -> 3072", 768, 3072),
          ("output 3072 -> 768", 3072, 768), ("projection 1536 -> 768", 1536, 768))
QUICK_SHAPES = SHAPES[:2]

Variant = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def linear_variants(device: str, dtype: torch.dtype) -> tuple[dict[str, tuple[str, Variant]], list[Skipped]]:
    """``{name: (kind, fn)}``: eager (``F.linear``) and maven_fast's ``cpu`` backend where it runs."""
    variants: dict[str, tuple[str, Variant]] = {"eager": ("eager", F.linear)}
    skipped = []
    if torch.device(device).type != "cpu":  # `maven-fast bench` does not run this suite there
        skipped.append(Skipped("maven_fast cuda", "on GPUs maven_fast's linear layers are torch's F.linear "
                                                  "(cuBLAS): the same work as eager, nothing to compare"))
        return variants, skipped
    problems = backend_problems("cpu", device, dtype)
    if problems:
        skipped.append(Skipped("maven_fast cpu", "; ".join(problems)))
    else:
        variants["maven_fast cpu"] = ("fused", lambda x, w, b: linear(x, w, b, backend="cpu"))
    return variants, skipped


def _inputs(in_features: int, out_features: int, device: str, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(TOKENS, in_features, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(out_features, in_features, generator=g) / in_features**0.5).to(device, dtype).requires_grad_()
    b = (torch.randn(out_features, generator=g) / 10).to(device, dtype).requires_grad_()
    grad = torch.randn(TOKENS, out_features, generator=g).to(device, dtype)
    return x, w, b, grad


def _forward_backward(fn: Variant, x, w, b, grad) -> dict[str, torch.Tensor]:
    y = fn(x, w, b)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), grad)
    return {"y": y, "dx": dx, "dW": dw, "db": db}


def _reference(x, w, b, grad) -> dict[str, torch.Tensor]:
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    return _forward_backward(F.linear, x64, w64, b64, grad.double())


def run_linear(
    device: str = "cpu",
    rates: dict[torch.dtype, float | None] | None = None,
    shapes: tuple[tuple[str, int, int], ...] = SHAPES,
    rounds: int = 10,
    extra_variants: dict[str, tuple[str, Variant]] | None = None,
    seed: int = 0,
) -> SuiteResult:
    """Checks, then times, every variant at every shape, one table per dtype (module docstring).
    ``rates``: ``{dtype: the machine's GEMM rate in GFLOP/s or None}`` (default fp32 only, no rate).
    A variant whose result differs raises :class:`~maven_fast.benchmark.checks.VariantMismatch`
    before any timing."""
    rates = rates or {torch.float32: None}
    tables, measurements, skipped = [], [], []
    for dtype, gemm_gflops in rates.items():
        variants, not_here = linear_variants(device, dtype)
        variants.update(extra_variants or {})
        skipped += not_here
        table = _linear_table(device, dtype, variants, shapes, rounds, gemm_gflops, seed, measurements)
        table.notes += skipped_lines(not_here)
        tables.append(table)
    return SuiteResult(NAME, Section("Linear layers", tables), measurements, skipped)


def _linear_table(device, dtype, variants, shapes, rounds, gemm_gflops, seed, measurements) -> Table:
    dtype_name = str(dtype).replace("torch.", "")
    header = ["layer", "pass", "variant", "median ms", "p20 ms", "p80 ms", "speed-up vs eager", "GFLOP/s"]
    if gemm_gflops:
        header.append("% of GEMM rate")
    header.append("first call s")
    table = Table(f"Linear layers, {device}, {dtype_name}, {TOKENS} tokens", header)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype in (torch.float32, torch.float64) else dict(rtol=3e-2, atol=3e-2)
    for label, n_in, n_out in shapes:
        x, w, b, grad = _inputs(n_in, n_out, device, dtype, seed)
        reference = _reference(x, w, b, grad)
        first: dict[str, float] = {}
        for name, (_, fn) in variants.items():
            t0 = time.perf_counter()
            check_close(name, _forward_backward(fn, x, w, b, grad), reference, **tol)
            first[name] = time.perf_counter() - t0
        for mode in PASSES:
            if mode == "forward":
                fns = {name: (lambda fn=fn: fn(x.detach(), w.detach(), b.detach())) for name, (_, fn) in variants.items()}
            else:
                fns = {name: (lambda fn=fn: _forward_backward(fn, x, w, b, grad)) for name, (_, fn) in variants.items()}
            timings = time_interleaved(fns, device, rounds=rounds)
            flops = (2 if mode == "forward" else 6) * TOKENS * n_in * n_out
            add_timed_rows(table, measurements, NAME, f"{label}, {dtype_name}", [label], mode, timings,
                           {name: kind for name, (kind, _) in variants.items()}, flops, gemm_gflops, first, flops)
    table.notes = [
        "Same inputs for every variant; output and the gradients of x, W and b are checked against an fp64 "
        "evaluation of F.linear before timing.",
        "GFLOP/s: 2 M N K per forward, 6 M N K per forward+backward (M = tokens, K = in, N = out features); the "
        "bias and its gradient are not counted.",
        "first call s: the variant's first (checked) forward+backward on that shape, not in the timings.",
    ]
    return table
