r"""The cross-modal block suite: MAVEN's six attention pathways, their
combination and the shared LayerNorm, on projected sequences (SPEC 6: the part
the fused op covers; the modality projections are outside it), B = 16,
D = 512, H = 2, dropout 0 (so every variant computes the same function).

Variants, on the same inputs and parameters:

* ``eager``: :meth:`maven_fast.model.CrossModalAttention.block` with backend
  ``eager`` (six ``nn.MultiheadAttention``, as the original model);
* ``eager+SDPA``: the same block written with ``F.linear`` and
  ``F.scaled_dot_product_attention`` (:func:`sdpa_block`);
* ``torch.compile(eager)`` (compile time reported separately);
* every fused backend: :class:`maven_fast.nn.CrossModalBlock` (the fused op
  ``torch.ops.maven_fast.cross_modal_block``) with a copy of the same
  parameters and ``backend = b`` (skipped, with the reason, where the device or
  the op cannot run it).

Cases: ``reference_mlp`` (Tv, Ta, Tt) = (64, 1, 1) without key masks (pooled
audio/text), ``paper`` (64, 100, 32) and (256, 400, 64) with key lengths
drawn in [T/2, T], fp32; on the GPU also ``paper`` (64, 64, 32) (every T <= 64)
and the packed problem T = 512 for all three modalities in bf16 without masks,
where ``SDPA flash`` (the eager+SDPA block forced onto torch's flash-attention
kernel) is the bar. Passes: forward (no autograd graph) and forward+backward
(gradients of the three inputs and of every parameter, random cotangents).
Each variant's outputs and gradients are checked against an fp64 copy of the
eager block before timing: fp32 within :data:`RTOL` / :data:`ATOL`; bf16 and
fp16 by SPEC 5's rule against eager in the same dtype (:func:`check_case`).

On the GPU the table adds TFLOP/s, % of the roofline and the host-inclusive
latency of one call (timings are device time between CUDA events). Roofline
of a variant: ``max(executed FLOPs / GEMM rate of the case's dtype, bytes /
copy bandwidth)``, both ceilings measured in the same run, with the traffic
floor :func:`~maven_fast.benchmark.flops.cross_modal_bytes`.

Work: :func:`maven_fast.benchmark.flops.cross_modal_flops` (the general path,
what eager computes), so GFLOP/s of a variant that skips work by a shortcut is
"effective" GFLOP/s on the same problem; the FLOPs a fused variant really
executes (its pathway plan, ``maven_fast.ops.cross_modal.plan_pathways``) are
:func:`~maven_fast.benchmark.flops.cross_modal_executed_flops`.

This suite runs when the build has the fused op module
``maven_fast.ops.cross_modal`` (:func:`unavailable_reason`).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maven_fast.backends import BackendUnavailable
from maven_fast.benchmark.checks import REDUCED_FACTOR, REDUCED_FLOOR, check_close, check_reduced, roundoff_units
from maven_fast.benchmark.flops import cross_modal_bytes, cross_modal_executed_flops, cross_modal_flops
from maven_fast.benchmark.memory import memory_method, peak_memory_mib
from maven_fast.benchmark.report import Section, Table
from maven_fast.benchmark.results import (Measurement, Skipped, SuiteResult, VariantMismatch, fused_backends,
                                          skipped_lines)
from maven_fast.benchmark.timing import time_interleaved

NAME = "cross_modal"
PASSES = ("forward", "forward+backward")
BATCH, EMBED, HEADS = 16, 512, 2


@dataclass(frozen=True)
class Case:
    steps: tuple[int, int, int]              # (Tv, Ta, Tt)
    lengths: bool                            # key lengths drawn in [T/2, T] (else every step valid)
    dtype: torch.dtype = torch.float32
    devices: tuple[str, ...] = ("cpu", "cuda")


CASES = {
    "reference_mlp (64, 1, 1)": Case((64, 1, 1), False),
    "paper (64, 64, 32)": Case((64, 64, 32), True, devices=("cuda",)),
    "paper (64, 100, 32)": Case((64, 100, 32), True),
    "paper (256, 400, 64)": Case((256, 400, 64), True),
    "packed (512, 512, 512) bf16": Case((512, 512, 512), False, torch.bfloat16, ("cuda",)),
    # CPU bf16 (issue 16), only where the CPU multiplies bf16 natively: emulated bf16 GEMMs run eager's
    # block at a few GFLOP/s (minutes per call at these shapes), so there is nothing to compare.
    "paper (64, 100, 32) bf16": Case((64, 100, 32), True, torch.bfloat16, ("cpu",)),
    "paper (256, 400, 64) bf16": Case((256, 400, 64), True, torch.bfloat16, ("cpu",)),
}
CPU_BF16_CASES = ("paper (64, 100, 32) bf16", "paper (256, 400, 64) bf16")
# The packed bf16 case is GPU-only: on a GPU the quick run times the tensor-core
# kernels against the SIMT ones, Triton and torch's flash SDPA on it.
QUICK_CASES = ("reference_mlp (64, 1, 1)", "paper (64, 64, 32)", "paper (64, 100, 32)",
               "packed (512, 512, 512) bf16")
#: fp32 variants against the fp64 reference: max|d| <= ATOL + RTOL max|ref| per tensor (max-norm, see checks.py).
RTOL, ATOL = 1e-4, 1e-5


def cases_for(device: str, names=None) -> tuple[str, ...]:
    """The cases (of ``names``, default all) that run on ``device`` (CPU bf16 cases: only on a CPU
    with native bf16, :func:`maven_fast.backends.cpu_native_bf16`)."""
    from maven_fast.backends import cpu_native_bf16

    dev = torch.device(device).type
    native = dev != "cpu" or cpu_native_bf16()
    return tuple(n for n in (names or CASES) if dev in CASES[n].devices
                 and (native or not (dev == "cpu" and CASES[n].dtype == torch.bfloat16)))

Block = Callable[..., tuple[Tensor, Tensor, Tensor]]  # (x_v, x_a, x_t, v_len, a_len, t_len) -> enhanced


def unavailable_reason() -> str | None:
    """None when the fused cross-modal op module is in this build, else why the suite cannot run."""
    if importlib.util.find_spec("maven_fast.ops.cross_modal") is None:
        return ("not available in this build: maven_fast.ops.cross_modal (the fused six-pathway block) "
                "is missing")
    return None


def _attend_sdpa(mha, query: Tensor, keys: Tensor, key_len: Tensor | None) -> Tensor:
    b, tq, d = query.shape
    h, tk = mha.num_heads, keys.shape[1]
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    heads = lambda x, t: x.view(b, t, h, d // h).transpose(1, 2)  # noqa: E731
    q = heads(F.linear(query, w_q, b_q), tq)
    k, v = heads(F.linear(keys, w_k, b_k), tk), heads(F.linear(keys, w_v, b_v), tk)
    mask = None
    if key_len is not None:
        # rows with no key at all see every key, then become out_proj(0) = bias (as the eager block)
        mask = (torch.arange(tk, device=keys.device) < key_len.clamp_min(1)[:, None])[:, None, None, :]
        mask = mask | (key_len == 0)[:, None, None, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = F.linear(out.transpose(1, 2).reshape(b, tq, d), mha.out_proj.weight, mha.out_proj.bias)
    if key_len is None:
        return out
    return torch.where((key_len == 0).view(-1, 1, 1), mha.out_proj.bias.to(out.dtype), out)


def sdpa_block(module) -> Block:
    """The block of ``module`` (a CrossModalAttention, dropout 0) with F.linear + SDPA."""
    def block(x_v, x_a, x_t, v_len=None, a_len=None, t_len=None):
        att = lambda name, q, k, n: _attend_sdpa(module.pathway(name), q, k, n)  # noqa: E731
        ln = module.layer_norm
        v = ln((x_v + att("v2a", x_v, x_a, a_len) + att("v2t", x_v, x_t, t_len)) / 3)
        a = ln((x_a + att("a2v", x_a, x_v, v_len) + att("a2t", x_a, x_t, t_len)) / 3)
        t = ln((x_t + att("t2v", x_t, x_v, v_len) + att("t2a", x_t, x_a, a_len)) / 3)
        return v, a, t
    return block


def flash_block(module) -> Block:
    """:func:`sdpa_block` restricted to torch's flash-attention SDPA kernel (fp16/bf16, no mask)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    inner = sdpa_block(module)

    def block(*args):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return inner(*args)
    return block


def make_block_module(embed: int = EMBED, heads: int = HEADS, seed: int = 0):
    from maven_fast.model import CrossModalAttention

    torch.manual_seed(seed)
    return CrossModalAttention(embed, embed, embed, embed, heads, dropout=0.0).train()


@dataclass
class BlockVariant:
    """A way to compute the block: ``fn(x_v, x_a, x_t, v_len, a_len, t_len)``, whose
    parameters are those of ``module`` (gradients are taken with respect to them).
    ``modes``: the pathway plan of a fused op with shortcuts (None: it does the general work).
    ``context``: entered around every call, forward and backward (e.g. a kernel choice)."""

    kind: str
    fn: Block
    module: nn.Module
    modes: list[int] | None = None
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def fused_block(module, backend: str) -> nn.Module:
    """``maven_fast.nn.CrossModalBlock`` (the fused op's module) holding a copy of ``module``'s
    block parameters, dropout 0, on ``backend``."""
    from maven_fast.nn import CrossModalBlock

    fused = CrossModalBlock(module.embed_dim, module.num_heads, attn_dropout=0.0, dropout=0.0, backend=backend)
    missing, _ = fused.load_state_dict(module.state_dict(), strict=False)  # the projections are not in it
    if missing:
        raise RuntimeError(f"CrossModalBlock parameters missing from the eager block: {missing}")
    device = next(module.parameters()).device
    return fused.to(device).train(module.training)


def fused_plan(tv: int, ta: int, tt: int, embed: int, heads: int, device_type: str = "cpu",
               backend: str | None = None, dtype: torch.dtype | None = None) -> list[int]:
    """The pathway modes the fused op chooses for these padded shapes on this device
    type, backend and dtype (0 general, 1 key length 1, 2 absorbed)."""
    from maven_fast.ops.cross_modal import plan_pathways

    return plan_pathways(tv, ta, tt, embed, heads, device_type=device_type, backend=backend, dtype=dtype)


def block_variants(module, device: torch.device, include_compile: bool = True, flash: bool = False
                   ) -> tuple[dict[str, BlockVariant], list[Skipped]]:
    """Every variant that can run here (fused backends on a copy of ``module``), and those that
    cannot. ``flash``: add ``SDPA flash`` (for a case without key masks in fp16/bf16)."""
    variants = {"eager": BlockVariant("eager", module.block, module),
                "eager+SDPA": BlockVariant("baseline", sdpa_block(module), module)}
    if flash:
        variants["SDPA flash"] = BlockVariant("baseline", flash_block(module), module)
    skipped = []
    if include_compile:
        variants["torch.compile(eager)"] = BlockVariant("baseline", torch.compile(module.block), module)
        if device.type == "cuda":
            variants["torch.compile(eager, reduce-overhead)"] = BlockVariant(
                "baseline", torch.compile(module.block, mode="reduce-overhead"), module)
    else:
        skipped.append(Skipped("torch.compile(eager)", "left out by the caller"))
    backends, not_here = fused_backends(device)
    skipped += not_here
    for backend in backends:
        fused = fused_block(module, backend).to(next(module.parameters()).dtype)
        variants[f"maven_fast {backend}"] = BlockVariant("fused", fused.block, fused)
    if "cuda" in backends and next(module.parameters()).dtype != torch.float32:
        # The same op with every attention problem on the SIMT kernels (bf16/fp16
        # default: tensor cores), to compare the two kernel families.
        from maven_fast.ops.cross_modal import cuda_attention_kernels

        fused = fused_block(module, "cuda").to(next(module.parameters()).dtype)
        variants["maven_fast cuda SIMT attention"] = BlockVariant(
            "fused", fused.block, fused, context=lambda: cuda_attention_kernels("simt"))
    return variants, skipped


def check_case(name: str, got, reference, eager, dtype: torch.dtype) -> float:
    """fp32: within RTOL / ATOL of the fp64 reference. bf16 / fp16: SPEC 5's rule, relative RMS error
    at most 2x eager's in the same dtype (+ floors): a fixed tolerance cannot hold at every size,
    since eager's own bf16 error grows with the reductions (eager failed a 5% max-norm bound on a
    LayerNorm weight gradient summed over 16 x 256 rows)."""
    if dtype in (torch.float32, torch.float64):
        return check_close(name, got, reference, RTOL, ATOL)
    return check_reduced(name, got, reference, eager, REDUCED_FACTOR, REDUCED_FLOOR,
                         tensor_floor=roundoff_units(dtype))


def checked_first_calls(variants: dict[str, BlockVariant], reference, xs, lens, cot,
                        skipped: list[Skipped], dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Checks every variant (VariantMismatch on a wrong result, :func:`check_case`; ``eager`` comes
    first, the yardstick in reduced precision) and returns the time of that first call; a fused
    backend the op refuses here (BackendUnavailable) is dropped and listed, as is ``SDPA flash``
    where torch has no flash kernel for the case."""
    first, eager = {}, None
    for name, v in list(variants.items()):
        t0 = time.perf_counter()
        try:
            with v.context():
                got = _results(v.fn, v.module, xs, lens, cot)
        except (BackendUnavailable, RuntimeError) as exc:
            if not isinstance(exc, BackendUnavailable) and name != "SDPA flash":
                raise
            del variants[name]
            if all(s.variant != name for s in skipped):
                skipped.append(Skipped(name, " ".join(str(exc).split())[:300]))
            continue
        eager = got if name == "eager" else eager
        if eager is None:
            raise VariantMismatch(f"{name}: checked before eager, the yardstick of reduced precision")
        check_case(name, got, reference, eager, dtype)
        first[name] = time.perf_counter() - t0
    return first


def make_inputs(tv: int, ta: int, tt: int, lengths: bool, device, batch: int = BATCH, embed: int = EMBED,
                seed: int = 0, dtype: torch.dtype = torch.float32
                ) -> tuple[list[Tensor], list[Tensor | None], list[Tensor]]:
    """(x_v, x_a, x_t) requiring grad, key lengths (or None), and cotangents of the three outputs."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(batch, t, embed, generator=g).to(device, dtype).requires_grad_() for t in (tv, ta, tt)]
    lens: list[Tensor | None] = [None, None, None]
    if lengths:
        lens = []
        for t in (tv, ta, tt):
            n = torch.randint(max(1, t // 2), t + 1, (batch,), generator=g)
            n[0] = t
            lens.append(n.to(device))
    cot = [torch.randn(batch, t, embed, generator=g).to(device, dtype) for t in (tv, ta, tt)]
    return xs, lens, cot


def _params(module) -> tuple[list[str], list[Tensor]]:
    """Named trainable parameters (the module's projections are outside the block: their gradients are None)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def _results(fn: Block, module, xs, lens, cot) -> dict[str, Tensor]:
    """Outputs, input gradients and block-parameter gradients for the cotangents ``cot``."""
    outs = fn(*xs, *lens)
    names, params = _params(module)
    grads = torch.autograd.grad(outs, xs + params, grad_outputs=cot, allow_unused=True)
    got = {f"out {m}": o for m, o in zip("vat", outs)}
    got.update({f"d{m}": g for m, g in zip(("x_v", "x_a", "x_t"), grads[:3])})
    # parameters outside the block (the eager module's projections) get no gradient and are left out;
    # a block parameter the reference has and a variant lacks is reported by check_close
    got.update({f"grad {n}": g for n, g in zip(names, grads[3:]) if g is not None})
    return got


def run_cross_modal(
    device: str = "cpu",
    cases: tuple[str, ...] = tuple(CASES),
    rounds: int = 10,
    gemm_gflops: float | None = None,
    batch: int = BATCH,
    embed: int = EMBED,
    extra_variants: dict[str, Callable[..., BlockVariant]] | None = None,
    seed: int = 0,
    include_compile: bool = True,
    rates: dict[str, tuple[float | None, str]] | None = None,
) -> SuiteResult:
    """Checks, then times, every variant on every case of ``cases`` that runs on ``device``
    (module docstring). ``gemm_gflops``: the fp32 GEMM rate (CPU: % of GEMM rate column; bf16
    cases against ``rates["gemm_bf16"]``);
    ``rates``: the machine's measured ceilings (:func:`~maven_fast.benchmark.roofline.measure_machine`),
    for the GPU's roofline columns.

    ``extra_variants``: ``{name: make(module) -> BlockVariant}`` (tests inject a wrong one,
    which must raise VariantMismatch before anything is timed).
    """
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    header = ["case", "pass", "variant", "median ms", "p20 ms", "p80 ms", "speed-up vs eager"]
    header += ["TFLOP/s", "% of roofline", "host ms"] if gpu else ["GFLOP/s"]
    header += (["% of GEMM rate"] if gemm_gflops and not gpu else []) + ["executed GFLOP", "peak MiB", "first call s"]
    table = Table(f"Cross-modal block, {dev.type}, B={batch}, D={embed}, H={HEADS}", header)
    measurements, skipped, notes = [], [], []
    left_out = [c for c in cases if c in CPU_BF16_CASES and dev.type == "cpu" and c not in cases_for(device, cases)]
    if left_out:
        from maven_fast.benchmark.roofline import bf16_matmul_support

        notes.append(f"left out: {', '.join(left_out)}: {bf16_matmul_support('cpu')}; eager's bf16 GEMMs run at a "
                     "few GFLOP/s here, so the comparison would take hours and mean nothing for bf16 hardware.")
    for case in cases_for(device, cases):
        spec = CASES[case]
        tv, ta, tt = spec.steps
        module = make_block_module(embed, HEADS, seed).to(dev, spec.dtype)
        flash = gpu and spec.dtype != torch.float32 and not spec.lengths
        variants, skipped_here = block_variants(module, dev, include_compile, flash)
        for name, make in (extra_variants or {}).items():
            variants[name] = make(module)
        skipped += [s for s in skipped_here if all(s.variant != k.variant for k in skipped)]
        xs, lens, cot = make_inputs(tv, ta, tt, spec.lengths, dev, batch, embed, seed, spec.dtype)
        ref_module = copy.deepcopy(module).double()
        ref_xs = [x.detach().double().requires_grad_() for x in xs]
        reference = _results(ref_module.block, ref_module, ref_xs, lens, [c.double() for c in cot])
        first = checked_first_calls(variants, reference, xs, lens, cot, skipped, spec.dtype)
        for name in (n for n, v in variants.items() if v.kind == "fused"):
            backend = name.split()[1]  # "maven_fast <backend>[ ...]": the op plans for its backend
            plan = fused_plan(tv, ta, tt, embed, HEADS, dev.type, backend, spec.dtype)
            notes.append(f"{case}: {name} pathway modes (v2a, v2t, a2v, a2t, t2v, t2a; 0 general, 1 key length 1, "
                         f"2 absorbed): {plan}")
        for mode in PASSES:
            if mode == "forward":
                fns = {n: (lambda v=v: _in(v, lambda: _no_grad(v.fn, xs, lens))) for n, v in variants.items()}
            else:
                fns = {n: (lambda v=v: _in(v, lambda: torch.autograd.grad(
                           v.fn(*xs, *lens), xs + _params(v.module)[1], grad_outputs=cot, allow_unused=True)))
                       for n, v in variants.items()}
            timings = time_interleaved(fns, dev, rounds=rounds, warmup=2)
            memory = {n: peak_memory_mib(f, dev) for n, f in fns.items()}
            backward = mode != "forward"
            flops = cross_modal_flops(batch, embed, tv, ta, tt, backward)
            nbytes = cross_modal_bytes(batch, embed, tv, ta, tt, xs[0].element_size(), backward)
            base = timings["eager"].median
            for name, t in timings.items():
                v = variants[name]
                executed = flops if v.kind != "fused" or plan is None else \
                    cross_modal_executed_flops(batch, embed, HEADS, tv, ta, tt, plan, backward)
                gflops = flops / (t.median * 1e-3) / 1e9
                row = [case, mode, name, t.median, t.p20, t.p80, base / t.median]
                if gpu:
                    row += [gflops / 1e3, roofline_percent(executed, nbytes, t.median, spec.dtype, rates),
                            t.host_median]
                else:
                    rate = gemm_gflops if spec.dtype == torch.float32 else (rates or {}).get("gemm_bf16", (None,))[0]
                    row += [gflops] + ([100 * gflops / rate if rate else "n/a"] if gemm_gflops else [])
                row += [executed / 1e9, "n/a" if memory[name] is None else memory[name], first[name]]
                table.rows.append(row)
                measurements.append(Measurement(NAME, case, mode, name, v.kind, t, base / t.median, flops, executed))
    rate_unit = "TFLOP/s" if gpu else "GFLOP/s"
    table.notes = [
        "Same inputs and parameters for every variant, dropout 0; outputs and gradients (inputs and parameters) "
        f"checked against an fp64 copy of the eager block before timing (fp32: max|d| <= {ATOL:g} + {RTOL:g} "
        f"max|ref|; bf16/fp16: relative RMS error <= {REDUCED_FACTOR:g}x eager's in the same dtype + "
        f"{REDUCED_FLOOR:g} pooled over the tensors, <= {2 * REDUCED_FACTOR:g}x + 4 units of roundoff on each). "
        "Cases are fp32 unless named otherwise.",
        f"{rate_unit} = cross_modal_flops (general path: 16 D^2 (Tv+Ta+Tt) + 8 D (Tv Ta + Tv Tt + Ta Tt) per item, "
        "x3 with backward) / median: the same work for every variant (effective rate for a fused op that skips "
        "work); executed GFLOP = what the variant performs (cross_modal_executed_flops of the fused plan).",
        f"peak MiB: {memory_method(dev)}, one call, measured after the timings.",
        "first call s: the checked first call (includes torch.compile's compile of forward and backward).",
    ] + ([
        "GPU: median/p20/p80 are device time (CUDA events around back-to-back calls); host ms = one call from an "
        "idle device to its completion (launch overhead included), median over rounds.",
        "% of roofline = max(executed FLOPs / GEMM rate of the case's dtype, cross_modal_bytes / copy bandwidth) "
        "/ median; cross_modal_bytes = elem x (2 B D (Tv+Ta+Tt) + 24 D^2) forward, "
        "elem x (5 B D (Tv+Ta+Tt) + 72 D^2) forward+backward (inputs, outputs, their gradients, the six pathways' "
        "weights and weight gradients, each moved once).",
    ] if gpu else []) + notes + skipped_lines(skipped)
    return SuiteResult(NAME, Section("Cross-modal block", [table]), measurements, skipped)


def roofline_percent(flops: float, nbytes: float, median_ms: float, dtype: torch.dtype,
                     rates: dict[str, tuple[float | None, str]] | None) -> float | str:
    """100 x roofline time / measured time (see the module docstring); "n/a" without the ceilings."""
    key = {torch.float32: "gemm_fp32", torch.bfloat16: "gemm_bf16", torch.float16: "gemm_bf16"}[dtype]
    gemm, copy_gbs = (rates or {}).get(key, (None, ""))[0], (rates or {}).get("copy", (None, ""))[0]
    if not gemm or not copy_gbs:
        return "n/a"
    roof_ms = max(flops / (gemm * 1e9), nbytes / (copy_gbs * 1e9)) * 1e3
    return 100 * roof_ms / median_ms


def _in(v: BlockVariant, call: Callable[[], object]):
    """``call()`` inside the variant's context."""
    with v.context():
        return call()


def _no_grad(fn: Block, xs, lens):
    with torch.no_grad():
        return fn(*(x.detach() for x in xs), *lens)
