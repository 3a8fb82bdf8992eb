"""Every Triton kernel compiled ahead of time for sm_80 and sm_90 (no GPU needed),
checked against what a thread block may use there (maven_fast/triton_aot.py).

``test_kernels_fit_sm80_sm90`` compiles, in every default test run, with
``triton.compile(..., target=GPUTarget("cuda", 80 | 90, 32))`` in 2 worker
processes (Triton cache under build/triton-aot/; CI starts cold), for sm_80 AND
sm_90, in fp32, fp16 and bf16:

- the attention forward, dQ and dK/dV kernels with every autotune config the
  autotuner may choose (``selectable_shapes``), for the plans of the benchmark
  shapes at D = 512, each with H = 2, 4, 8 (head sizes 256, 128, 64):
  reference_mlp (T 64, 1, 1: absorbed pathways, width 512) and paper (T 64,
  100, 32 and 256, 400, 64), attention dropout on (PSUM too where there are
  absorbed pathways) and off;
- the combine forward and backward kernels for the reference_mlp (T 64, 1, 1)
  and paper (T 64, 100, 32) plans at D = 512, batch 32, both dropouts
  on and off;
- the polar-head forward and backward kernels at D = 256, bounded and unbounded,
  with every optional input and with none;

408 compiles once identical ones are merged (e.g. head sizes 256 and 128 both
run BLOCK_D 128 in 16-bit), about 4 minutes from a cold cache on 2 cores. It
fails naming every (kernel, config, dtype, head size, arch) over a limit: shared
memory per block (163 KB on sm_80, 227 KB on sm_90), more than 255 registers per
thread or 65,536 per block, or any spill. Not compiled: sequence lengths other
than the three benchmark shapes (run-time sizes: only divisibility by 16 and
being 1 change the code), dropout probabilities other than 0.1 (a run-time
threshold; p >= 0.5 makes it a 64-bit integer), batch sizes 1 and 2 (a narrower
combine-backward reduction than batch 32's) and polar heads over too few rows to
start 4 programs per SM (a narrower loss reduction than the one compiled).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from maven_fast import triton_aot
from maven_fast.kernels import cross_modal_attention as ca


def test_res_usage_and_ptxas_parsers():
    text = ("Resource usage:\n Common:\n  GLOBAL:11 CONSTANT[4]:8\n Function attention_fwd_kernel:\n"
            "  REG:231 STACK:64 SHARED:1024 LOCAL:0 CONSTANT[0]:680 TEXTURE:0 SURFACE:0 SAMPLER:0\n")
    assert triton_aot.parse_res_usage(text, "attention_fwd_kernel") == dict(
        registers=231, stack=64, static_shared=1024, local=0)
    with pytest.raises(ValueError):
        triton_aot.parse_res_usage(text, "attention_bwd_dq_kernel")
    log = ("ptxas info    : Function properties for k\n"
           "    80 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n")
    assert triton_aot.parse_ptxas_spills(log) == (16, 12)
    assert triton_aot.parse_ptxas_spills("") is None


@pytest.mark.parametrize("field, value, words", [
    ("shared", 166913, "shared memory"), ("registers", 256, "registers per thread"),
    ("spill_stores", 4, "spills"), ("spill_loads", 4, "spills"), ("local", 8, "spills"),
])
def test_limits_are_enforced(field, value, words):
    ok = triton_aot.Result("k", "case", "bf16", "64", "cfg", 80, threads=256, shared=166912, registers=255)
    assert triton_aot.violations(ok) == []
    setattr(ok, field, value)
    assert any(words in v for v in triton_aot.violations(ok))
    over = triton_aot.Result("k", "case", "bf16", "64", "cfg", 80, threads=512, registers=129)
    assert any("per block" in v or "x 512 threads" in v for v in triton_aot.violations(over))
    assert triton_aot.violations(triton_aot.Result("k", "c", "bf16", "64", "cfg", 90, shared=232448)) == []
    assert triton_aot.violations(triton_aot.Result("k", "c", "bf16", "64", "cfg", 90, shared=232449))


@pytest.mark.parametrize("kind", ["fwd", "dq", "dkv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seq_class", [ca.SHORT, ca.LONG])
def test_pruner_applies_the_one_rule(kind, dtype, seq_class):
    """The autotuner's pruner keeps exactly the shapes selectable_shapes allows (the
    shapes the AOT check compiles), and every one of them is in the GPU config list."""
    block_d = ca.block_d_cap(dtype, interpret=False)
    allowed = ca.selectable_shapes(kind, seq_class, block_d, dtype)
    assert allowed
    configs = ca.gpu_configs(kind)
    kept = ca._pruner(kind)(configs, {"t_key": seq_class, "q0": torch.empty(1, dtype=dtype)}, BLOCK_D=block_d)
    assert sorted(ca.config_shape(c) for c in kept) == sorted(allowed)


def test_every_kernel_is_compiled():
    """Each ``*_kernel`` of maven_fast.kernels is in the matrix, and merging identical
    compiles drops none."""
    import importlib
    import pkgutil

    import maven_fast.kernels as pkg

    names = {n for m in pkgutil.iter_modules(pkg.__path__)
             for n in vars(importlib.import_module(f"{pkg.__name__}.{m.name}")) if n.endswith("_kernel")}
    jobs = triton_aot.all_jobs()
    assert names == {j.kernel for j in jobs}
    raw = triton_aot.attention_jobs() + triton_aot.combine_jobs() + triton_aot.polar_jobs()
    assert {triton_aot.compile_key(j) for j in raw} == {triton_aot.compile_key(j) for j in jobs}
    assert len(jobs) == len({triton_aot.compile_key(j) for j in jobs})


@pytest.mark.parametrize("case", triton_aot.ATTENTION_CASES, ids=lambda c: f"{c[0]}-{c[1][1]}-H{c[2]}")
@pytest.mark.parametrize("dtype", triton_aot.DTYPES)
def test_every_selectable_shape_is_compiled(case, dtype):
    """For each attention case and dtype, each attention kernel is compiled with exactly
    the shapes the autotuner may choose there, dropout on and off, for sm_80 and sm_90."""
    jobs = triton_aot.attention_jobs(dtypes=(dtype,), cases=(case,))
    seq_class = ca.t_key(max(case[1]))
    for kernel, kind in triton_aot.ATTENTION_KERNELS:
        for arch in triton_aot.ARCHS:
            for dropout in (True, False):
                mine = [j for j in jobs if (j.kernel, j.arch, j.constexprs["DROPOUT"]) == (kernel, arch, dropout)]
                block_d = {j.constexprs["BLOCK_D"] for j in mine}
                assert len(block_d) == 1, (kernel, arch, dropout)
                tdt = getattr(torch, triton_aot.TORCH_DTYPES[dtype])
                want = ca.selectable_shapes(kind, seq_class, block_d.pop(), tdt)
                assert sorted(j.config.split(" BLOCK_D")[0] for j in mine) == sorted(
                    triton_aot._config_label(s) for s in want), (kernel, arch, dropout)


def test_kernels_fit_sm80_sm90():
    """Compile the whole matrix and fail on any compile over a limit of its arch."""
    jobs = triton_aot.all_jobs()
    start = time.perf_counter()
    cache = Path(__file__).resolve().parents[1] / "build" / "triton-aot"
    results = triton_aot.compile_all(jobs, workers=2, cache=cache)
    wall = time.perf_counter() - start
    bad = [r for r in results if r.violations]
    print(f"\n{len(results)} Triton compiles for sm_80/sm_90 in {wall:.0f} s "
          f"({sum(r.cached for r in results)} from the cache)\n" + "\n".join(triton_aot.summary(results)))
    assert not bad, f"{len(bad)} of {len(results)} compiles over a limit:\n" + "\n".join(
        f"  {r.label}: {'; '.join(r.violations)}" for r in bad)
    # The forward kernels check the key lengths they read on the device (a PTX trap):
    # the check survives compilation (it has side effects, so it is never dead code).
    forward = [r for r in results if r.kernel in ("attention_fwd_kernel", "combine_fwd_kernel")]
    assert forward and all(r.traps for r in forward), [r.label for r in forward if not r.traps]
