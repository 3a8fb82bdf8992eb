"""The polar head suite: Linear(256 -> 2) + bounded polar activation + VA +
masked MSE, eager PyTorch vs torch.compile(eager) vs every fused backend, on
the same inputs, forward and forward+backward.

Every variant is checked against an fp64 evaluation of the eager reference
(outputs, and for forward+backward the gradients of x, W, b) before timing.

Bytes moved (the op is memory-bound): the forward reads x (N D elements);
forward+backward reads x twice and writes dx: ``polar_head_bytes`` =
(1 or 3) N D elem_size, and GB/s = bytes / time (also as a fraction of the
machine's measured copy bandwidth, when given).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from maven_fast.benchmark.checks import check_close
from maven_fast.benchmark.flops import polar_head_bytes
from maven_fast.benchmark.report import Section, Table
from maven_fast.benchmark.results import Skipped, SuiteResult, add_timed_rows, fused_backends, skipped_lines
from maven_fast.benchmark.timing import time_interleaved
from maven_fast.ops import polar_head, polar_head_reference

NAME = "polar_head"
PASSES = ("forward", "forward+backward")
FEATURES = 256

Variant = Callable[..., object]  # fn(x, w, b, target, mask) -> PolarHeadOutput


def _eager(*a):
    return polar_head_reference(*a[:5], bounded=True)


def polar_head_variants(device: str, dtype: torch.dtype, include_compile: bool = True
                        ) -> tuple[dict[str, tuple[str, Variant]], list[Skipped]]:
    """``{name: (kind, fn)}`` for every variant that can run here, and those that cannot."""
    variants: dict[str, tuple[str, Variant]] = {"eager": ("eager", _eager)}
    skipped = []
    if not include_compile:
        skipped.append(Skipped("torch.compile(eager)", "left out by the caller"))
    else:
        variants["torch.compile(eager)"] = ("baseline", torch.compile(_eager))
    if device == "cuda" and include_compile:
        variants["torch.compile(eager, reduce-overhead)"] = ("baseline", torch.compile(_eager, mode="reduce-overhead"))
    backends, not_here = fused_backends(device, dtype)
    skipped += not_here
    for backend in backends:
        variants[f"maven_fast {backend}"] = (
            "fused", lambda *a, _b=backend: polar_head(*a[:5], bounded=True, backend=_b)
        )
    return variants, skipped


def _inputs(n: int, device: str, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(2, FEATURES, generator=g) / FEATURES**0.5).to(device, dtype).requires_grad_()
    b = torch.zeros(2, device=device, dtype=dtype, requires_grad=True)
    target = (torch.rand(n, 2, generator=g) * 2 - 1).to(device)
    mask = (torch.rand(n, generator=g) > 0.1).to(device)
    return x, w, b, target, mask


def _grads(out, params) -> dict[str, torch.Tensor]:
    gx, gw, gb = torch.autograd.grad(out.loss + out.valence_arousal.sum(), params)
    return {"dx": gx, "dW": gw, "db": gb}


def _check(name, fn, inputs, reference, dtype) -> None:
    x, w, b, target, mask = inputs
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    out = fn(x, w, b, target, mask)
    got = {"valence_arousal": out.valence_arousal, "loss": out.loss, **_grads(out, (x, w, b))}
    check_close(name, got, reference, **tol)


def _reference(inputs) -> dict[str, torch.Tensor]:
    x, w, b, target, mask = inputs
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    out = polar_head_reference(x64, w64, b64, target, mask)
    return {"valence_arousal": out.valence_arousal, "loss": out.loss, **_grads(out, (x64, w64, b64))}


def run_polar_head(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    sizes: tuple[int, ...] = (1024, 4096, 16384, 65536),
    rounds: int = 15,
    copy_gbs: float | None = None,
    extra_variants: dict[str, tuple[str, Variant]] | None = None,
    seed: int = 0,
    include_compile: bool = True,
) -> SuiteResult:
    """Checks, then times, every variant at every size (see the module docstring).

    ``extra_variants`` adds variants (e.g. a deliberately wrong one in tests);
    a variant whose result differs raises :class:`VariantMismatch` before any timing.
    """
    variants, skipped = polar_head_variants(device, dtype, include_compile)
    variants.update(extra_variants or {})
    header = ["N", "pass", "variant", "median ms", "p20 ms", "p80 ms", "speed-up vs eager", "GB/s"]
    if copy_gbs:
        header.append("% of copy BW")
    header.append("first call s")
    table = Table(f"Polar head, {device}, {str(dtype).replace('torch.', '')}, D={FEATURES}", header)
    measurements = []
    for n in sizes:
        inputs = _inputs(n, device, dtype, seed)
        reference = _reference(inputs)
        x, w, b, target, mask = inputs
        first: dict[str, float] = {}
        for name, (_, fn) in variants.items():
            t0 = time.perf_counter()
            _check(name, fn, inputs, reference, dtype)  # the first call: includes compiling
            first[name] = time.perf_counter() - t0
        for mode in PASSES:
            fns = {}
            for name, (_, fn) in variants.items():
                if mode == "forward":
                    fns[name] = lambda fn=fn: fn(x.detach(), w.detach(), b.detach(), target, mask)
                else:
                    fns[name] = lambda fn=fn: _grads(fn(x, w, b, target, mask), (x, w, b))
            timings = time_interleaved(fns, device, rounds=rounds)
            nbytes = polar_head_bytes(n, FEATURES, x.element_size(), backward=mode != "forward")
            add_timed_rows(table, measurements, NAME, f"N={n}", [n], mode, timings,
                           {name: kind for name, (kind, _) in variants.items()}, nbytes, copy_gbs, first)
    table.notes = [
        "Same inputs for every variant; outputs, loss and gradients of each variant are checked against an "
        "fp64 evaluation of the eager reference before timing.",
        "GB/s counts x once (forward) or three times (x read twice + dx written) for forward+backward.",
        "first call s: the variant's first (checked) call on that size, not in the timings; for torch.compile it "
        "includes compiling the graph with gradients (the no-grad forward graph compiles during warm-up).",
    ] + skipped_lines(skipped)
    return SuiteResult(NAME, Section("Polar head", [table]), measurements, skipped)
