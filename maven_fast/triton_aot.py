r"""Ahead-of-time compile of maven_fast's Triton kernels for sm_80 and sm_90, no GPU needed.

Every Triton kernel, with every autotune config the autotuner may choose, for
each dtype (fp32, fp16, bf16), head size (64, 128, 256 and the absorbed
pathways' width D = 512) and arch, is compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", 80 | 90, 32))``,
which runs Triton's whole pipeline and ptxas without a driver. Each compile is
checked against what one thread block may use on that arch:

    shared memory  Triton's dynamic shared memory + the cubin's static shared
                   <= 166,912 B (sm_80, A100: 163 KB opt-in) or 232,448 B (sm_90: 227 KB)
    registers      <= 255 per thread and registers x threads <= 65,536
    spills         0 bytes of spill stores and loads (the ptxas -v log of the compile)
                   and no local memory (the cubin, read with cuobjdump -res-usage);
                   the stack frame is reported, not limited (some kernels keep a
                   few bytes there without spilling)

What is compiled (the launches' own functions give the compile-time arguments:
``attention_constexprs``, ``combine_constexprs`` in kernels/cross_modal.py,
``launch_shape`` / ``forward_constexprs`` / ``backward_constexprs`` in
kernels/polar_head.py; the autotune shapes come from ``selectable_shapes`` in
kernels/cross_modal_attention.py, the rule the autotuner's pruner applies):

- attention forward, dQ and dK/dV: the plans ``plan_pathways`` makes for the
  benchmark shapes at D = 512: ``reference_mlp`` (T = 64, 1, 1: absorbed
  pathways of width 512) and ``paper`` (T = 64, 100, 32: short sequences;
  256, 400, 64: long), each with H = 2, 4, 8 (head sizes 256, 128, 64);
  attention dropout on (p = 0.1, the presets'; with PSUM where the plan has
  absorbed pathways) and off; every shape the autotuner may choose for the
  plan's sequence class, BLOCK_D and dtype;
- combine forward and backward: the ``reference_mlp`` and ``paper`` plans at
  D = 512 (every preset's; the kernels hold one row of BLOCK_D = next power of
  two of D and do not depend on the head size, so smaller D use fewer
  resources), batch 32, both dropouts on and off;
- polar head forward and backward: D = 256 (the regressor's last hidden size
  in every preset), bounded (``paper``) and unbounded (``reference_mlp``),
  every optional input present and none, with the largest loss-reduction
  width the arch's SM count gives (A100: 108 SMs, H100/H200: 132).

Run-time integers are specialised as the Triton launcher does (divisible by 16,
equal to 1) from the shapes above, through Triton's own binder. The compiles run
in worker processes with TRITON_INTERPRET=0 (the test suite sets it to 1 for
the CPU interpreter) and their own Triton cache (the test's: build/triton-aot/,
from which a warm run reads the cubins back; CI starts cold).

    python -m maven_fast.triton_aot [--out bench/results/triton-aot.md] [--jobs 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from maven_fast.kernels.launch_config import REGISTERS_PER_BLOCK, REGISTERS_PER_THREAD

MARK = "@@triton-aot "  # prefix of a worker's protocol lines on stdout


# --------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class Arch:
    """What one thread block may use on a GPU architecture (registers: the limits
    kernels/launch_config.py gives ptxas, the same on sm_80 and sm_90)."""

    cc: int
    name: str
    max_shared: int  # bytes per block (opt-in)
    sm_count: int  # the SM count of the GPU whose loss-reduction width is compiled
    max_regs_per_thread: int = REGISTERS_PER_THREAD
    max_regs_per_block: int = REGISTERS_PER_BLOCK


ARCHS = {
    80: Arch(80, "sm_80 (A100)", 163 * 1024, 108),
    90: Arch(90, "sm_90 (H100/H200)", 227 * 1024, 132),
}
DTYPES = ("fp32", "fp16", "bf16")
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
ATTENTION_KERNELS = (("attention_fwd_kernel", "fwd"), ("attention_bwd_dq_kernel", "dq"),
                     ("attention_bwd_dkv_kernel", "dkv"))
D_MODEL = 512
HEADS = (2, 4, 8)  # D = 512: head sizes 256, 128, 64
DROPOUT_P = 0.1  # cross_modal.dropout of every preset
BATCH = 32
POLAR_D = 256  # regressor.hidden_sizes[1] of every preset
POLAR_ROWS = 1 << 16  # enough rows for the most programs (the widest loss reduction)
ATTENTION_CASES = (  # (preset, (T_v, T_a, T_t), H)
    *(("reference_mlp", (64, 1, 1), h) for h in HEADS),
    *(("paper", (64, 100, 32), h) for h in HEADS),
    *(("paper", (256, 400, 64), h) for h in HEADS),
)

COMBINE_CASES = (("reference_mlp", (64, 1, 1), 2), ("paper", (64, 100, 32), 2))  # items; rows

# Pointer arguments by role (the parameter name without its trailing digits):
# "data" is the call's dtype; the rest as the launches pass them.
POINTER_ROLES = {
    **dict.fromkeys(("q", "kv", "o", "do", "dq", "dkv", "gin", "gout",  # attention
                     "x", "rows", "u", "y", "c", "ob", "ln_w", "ln_b", "gy", "gs", "gc",  # combine
                     "x_ptr", "w_ptr", "b_ptr", "va_ptr", "ti_ptr", "gva_ptr", "gti_ptr",  # polar head
                     "gx_ptr", "gw_ptr", "gb_ptr"), "data"),
    **dict.fromkeys(("lse", "ps", "dps", "st", "partial_ptr", "g_ln_w", "g_ln_b", "gbr", "target_ptr",
                     "loss_ptr", "nvalid_ptr", "gloss_ptr"), "float32"),
    **dict.fromkeys(("len", "il", "rng_ptr"), "int64"),
    "counter_ptr": "int32",
    "mask_ptr": "bool",  # the loss mask; int32 (the counter) when absent
}


@dataclass
class Job:
    """One compile: a kernel with its arguments' specs, constexprs and options for one arch."""

    module: str
    kernel: str
    case: str
    dtype: str
    head: str
    config: str
    arch: int
    args: list  # per non-constexpr parameter: ["ptr", torch dtype name] or ["val", python value]
    constexprs: dict
    options: dict = field(default_factory=dict)


@dataclass
class Result:
    """Resources of one compiled kernel and the limits it breaks."""

    kernel: str
    case: str
    dtype: str
    head: str
    config: str
    arch: int
    threads: int = 0
    shared: int = 0  # bytes: Triton's dynamic shared memory + the cubin's static
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    local: int = 0
    compile_s: float = 0.0
    traps: bool = False  # the PTX holds a `trap` (the device-side key-length check)
    cached: bool = False
    error: str = ""
    violations: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kernel} [{self.case}] {self.config} {self.dtype} head {self.head} sm_{self.arch}"


# --------------------------------------------------------------------------- enumeration
def _role(name: str) -> str:
    return re.sub(r"\d+$", "", name)


def _kernel_params(module: str, kernel: str):
    """The JIT function of a kernel (unwrapping the autotuner) and its (name, is_constexpr)
    parameters. Under TRITON_INTERPRET=1 (the test process) there is no JIT function:
    then (None, params read from the Python function's annotations)."""
    import importlib
    import inspect

    fn = getattr(importlib.import_module(module), kernel)
    while not hasattr(fn, "params") and hasattr(fn, "fn"):
        fn = fn.fn
    if hasattr(fn, "params"):
        return fn, [(p.name, p.is_constexpr) for p in fn.params]
    params = inspect.signature(fn).parameters.values()
    return None, [(p.name, "constexpr" in str(p.annotation)) for p in params]


def _arg_specs(module: str, kernel: str, dtype: str, scalars: dict, pointer_dtypes: dict | None = None) -> list:
    """The specs of a kernel's non-constexpr arguments, in its parameter order:
    pointers by role (:data:`POINTER_ROLES`), scalars from ``scalars`` by name."""
    import torch

    data = getattr(torch, TORCH_DTYPES[dtype])
    specs = []
    for name, is_constexpr in _kernel_params(module, kernel)[1]:
        if is_constexpr:
            continue
        if name in scalars:
            specs.append(["val", scalars[name]])
            continue
        role = (pointer_dtypes or {}).get(name) or POINTER_ROLES.get(name) or POINTER_ROLES.get(_role(name))
        if role is None:
            raise KeyError(f"{kernel}: parameter {name!r} is neither a known pointer role nor a scalar the "
                           "ahead-of-time check knows; add it to maven_fast/triton_aot.py")
        specs.append(["ptr", str(data if role == "data" else getattr(torch, role)).replace("torch.", "")])
    return specs


def _config_label(shape, extra: str = "") -> str:
    m, n, w, s = shape
    return f"M{m} N{n} w{w} s{s}" + (f" {extra}" if extra else "")


def attention_jobs(dtypes=DTYPES, archs=tuple(ARCHS), cases=ATTENTION_CASES, dropouts=(True, False)) -> list[Job]:
    """Every (attention kernel, selectable autotune shape, dtype, head size, arch, dropout) to compile."""
    import torch

    from maven_fast.kernels import cross_modal as cm
    from maven_fast.kernels import cross_modal_attention as ca
    from maven_fast.kernels.cross_modal_dropout import dropout_threshold
    from maven_fast.ops.cross_modal import plan_pathways

    mod = ca.__name__
    jobs = []
    for preset, t, heads in cases:
        modes = plan_pathways(*t, D_MODEL, heads, device_type="cuda")
        for drop in dropouts:
            p = DROPOUT_P if drop else 0.0
            plan = cm.Plan(BATCH, D_MODEL, heads, t, modes, p, p)
            absorbed = any(m == 2 for m in modes)
            head = f"{D_MODEL} (absorbed)" if absorbed else str(D_MODEL // heads)
            scalars = dict(threshold=dropout_threshold(p) if drop else 0, inv_keep=1.0 / (1.0 - p),
                           sm_scale=1.0 / (plan.head_dim ** 0.5), T0=t[0], T1=t[1], T2=t[2], D=D_MODEL, H=heads,
                           t_key=ca.t_key(max(t)))
            case = f"{preset} T={t[0]},{t[1]},{t[2]}"
            for dtype in dtypes:
                tdt = getattr(torch, TORCH_DTYPES[dtype])
                meta = cm.attention_constexprs(plan, drop, tdt, interpret=False)
                flags = "+".join(k.lower() for k in ("DROPOUT", "PSUM") if meta[k]) or "no dropout"
                for kernel, kind in ATTENTION_KERNELS:
                    specs = _arg_specs(mod, kernel, dtype, scalars)
                    shapes = ca.selectable_shapes(kind, scalars["t_key"], meta["BLOCK_D"], tdt)
                    for config in (c for c in ca.gpu_configs(kind) if ca.config_shape(c) in shapes):
                        label = _config_label(ca.config_shape(config), f"BLOCK_D={meta['BLOCK_D']} {flags}")
                        for arch in archs:
                            jobs.append(Job(mod, kernel, case, dtype, head, label, arch, specs,
                                            dict(meta, **config.kwargs), _options(config)))
    return jobs


def _options(config) -> dict:
    """The compile options of an autotune config (warps, stages, register limit, ...)."""
    return {k: v for k, v in config.all_kwargs().items() if k not in config.kwargs}


def _launch_options(module: str, kernel: str) -> dict:
    """The options of a kernel launched with one fixed config (its one-config autotuner),
    or {} (Triton's defaults) for a plain JIT kernel."""
    import importlib

    configs = getattr(getattr(importlib.import_module(module), kernel), "configs", None)
    if not configs:
        return {}
    if len(configs) != 1:
        raise ValueError(f"{kernel} has {len(configs)} autotune configs; the AOT check expects one")
    return _options(configs[0])


def combine_jobs(dtypes=DTYPES, archs=tuple(ARCHS), d_models=(D_MODEL,), dropouts=(True, False)) -> list[Job]:
    """Both combine kernels for the reference_mlp and paper plans, dropouts on and off."""
    from maven_fast.kernels import cross_modal as cm
    from maven_fast.kernels import cross_modal_combine as cc
    from maven_fast.kernels.cross_modal_dropout import dropout_threshold
    from maven_fast.ops.cross_modal import plan_pathways

    jobs = []
    for d in d_models:
        for preset, t, heads in COMBINE_CASES:
            modes = plan_pathways(*t, d, heads, device_type="cuda")
            for drop in dropouts:
                p = DROPOUT_P if drop else 0.0
                plan = cm.Plan(BATCH, d, heads, t, modes, p, p)
                th = dropout_threshold(p) if drop else 0
                scalars = dict(attn_threshold=th, attn_inv_keep=1.0 / (1.0 - p), out_threshold=th,
                               out_inv_keep=1.0 / (1.0 - p), eps=1e-5, B=BATCH, T0=t[0], T1=t[1], T2=t[2], D=d,
                               item_heads=heads if drop else 1)
                for kernel, backward in (("combine_fwd_kernel", False), ("combine_bwd_kernel", True)):
                    meta = cm.combine_constexprs(plan, backward, interpret=False)
                    label = " ".join(f"{k}={int(v)}" for k, v in meta.items())
                    for dtype in dtypes:
                        specs = _arg_specs(cc.__name__, kernel, dtype, scalars)
                        for arch in archs:
                            jobs.append(Job(cc.__name__, kernel, f"{preset} T={t[0]},{t[1]},{t[2]} B={BATCH}",
                                            dtype, f"D={d}", label, arch, specs, meta,
                                            _launch_options(cc.__name__, kernel)))
    return jobs


def polar_jobs(dtypes=DTYPES, archs=tuple(ARCHS), bounded_presets=((True, "paper"), (False, "reference_mlp")),
               inputs=(True, False)) -> list[Job]:
    """Both polar-head kernels, bounded and unbounded, every optional input present and none."""
    from maven_fast.kernels import polar_head as ph

    jobs = []
    for bounded, preset in bounded_presets:
        for on in inputs:
            for arch in archs:
                block_n, block_d, programs = ph.launch_shape(POLAR_ROWS, POLAR_D, ph.max_programs(ARCHS[arch].sm_count))
                scalars = dict(ldx=POLAR_D, n=POLAR_ROWS, d=POLAR_D)
                mask = {"mask_ptr": "bool" if on else "int32"}
                fwd = ph.forward_constexprs(block_n, block_d, programs, bounded, on, on)
                bwd = ph.backward_constexprs(block_n, block_d, bounded, on, on, on, on)
                kernels = (("polar_head_fwd_kernel", fwd), ("polar_head_bwd_kernel", bwd))
                for kernel, meta in kernels:
                    label = " ".join(f"{k}={int(v)}" for k, v in meta.items())
                    for dtype in dtypes:
                        jobs.append(Job(ph.__name__, kernel, f"{preset} N={POLAR_ROWS}", dtype, f"D={POLAR_D}",
                                        label, arch, _arg_specs(ph.__name__, kernel, dtype, scalars, mask), meta,
                                        _launch_options(ph.__name__, kernel)))
    return jobs


def all_jobs() -> list[Job]:
    """The whole matrix: attention, combine and polar-head kernels (identical compiles merged)."""
    return dedupe(attention_jobs() + combine_jobs() + polar_jobs())


def _specialisation(spec: list) -> tuple:
    """What Triton's launcher specialises a non-constexpr argument on: a pointer's
    dtype; an integer's type, == 1 and divisibility by 16; a float's type."""
    kind, v = spec
    if kind == "ptr":
        return ("ptr", v)
    if isinstance(v, bool) or not isinstance(v, int):
        return (type(v).__name__,)
    return ("int", v == 1, v % 16 == 0, -2**31 <= v < 2**31)


def compile_key(j: Job) -> tuple:
    """What decides the compiled kernel: module, kernel, arch, constexprs, options and
    the arguments' specialisation."""
    return (j.module, j.kernel, j.arch, json.dumps(j.constexprs, sort_keys=True),
            json.dumps(j.options, sort_keys=True), tuple(_specialisation(a) for a in j.args))


def dedupe(jobs: list[Job]) -> list[Job]:
    """Jobs that compile the same kernel (:func:`compile_key`; e.g. head sizes 256 and
    128 at BLOCK_D 128) merged into one whose case and head list them all."""
    merged: dict = {}
    for j in jobs:
        key = compile_key(j)
        if key not in merged:
            merged[key] = Job(**{**asdict(j)})
            continue
        m = merged[key]
        for attr in ("case", "head"):
            parts = getattr(m, attr).split("; ")
            if getattr(j, attr) not in parts:
                setattr(m, attr, "; ".join(parts + [getattr(j, attr)]))
    return list(merged.values())


# --------------------------------------------------------------------------- compile (worker side)
def _tool(name: str) -> str:
    """Path of an NVIDIA tool Triton ships (ptxas, cuobjdump), else the one on PATH."""
    import triton

    knob = getattr(getattr(getattr(triton, "knobs", None), "nvidia", None), name, None)
    path = getattr(knob, "path", None)
    if path and os.path.exists(path):
        return path
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if bundled.exists():
        return str(bundled)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: neither shipped with Triton nor on PATH")
    return found


def parse_res_usage(text: str, kernel: str) -> dict:
    """REG, STACK, SHARED and LOCAL of ``kernel`` from ``cuobjdump -res-usage`` output."""
    m = re.search(rf"Function {re.escape(kernel)}:\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if not m:
        raise ValueError(f"cuobjdump -res-usage: no resource line for {kernel}:\n{text}")
    return dict(zip(("registers", "stack", "static_shared", "local"), map(int, m.groups())))


def parse_ptxas_spills(log: str) -> tuple[int, int] | None:
    """(spill store bytes, spill load bytes) from a ``ptxas -v`` log, or None if absent."""
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return (int(m.group(1)), int(m.group(2))) if m else None


def cubin_resources(cubin: bytes, kernel: str) -> dict:
    """Registers, stack, static shared and local memory of a cubin (cuobjdump -res-usage)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True, check=True)
    return parse_res_usage(out.stdout, kernel)


def _ptxas_spills(ptx: str, cc: int) -> tuple[int, int]:
    """Spill bytes from running ptxas -v again on the PTX (when the cubin came from the cache)."""
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        out = subprocess.run([_tool("ptxas"), "-v", "--regAllocOptLevel=2", f"--gpu-name={target}", str(src),
                              "-o", str(Path(tmp) / "k.o")], capture_output=True, text=True, check=True)
    spills = parse_ptxas_spills(out.stderr + out.stdout)
    if spills is None:
        raise ValueError(f"ptxas -v printed no spill line for sm_{cc}:\n{out.stderr}")
    return spills


def _binder_inputs(job: Job):
    """The call's arguments: small CPU tensors of the given dtypes for pointers (the binder
    reads their dtype and 16-byte alignment), the values for scalars."""
    import torch

    return [torch.empty(4, dtype=getattr(torch, v)) if kind == "ptr" else v for kind, v in job.args]


def compile_job(job: Job, cache: Path) -> Result:
    """Compile one job for its arch and read its resources; never raises."""
    res = Result(job.kernel, job.case, job.dtype, job.head, job.config, job.arch)
    try:
        _compile_into(job, cache, res)
    except Exception as e:  # noqa: BLE001 (reported as a failed compile)
        res.error = f"{type(e).__name__}: {e}"[:2000]
    res.violations = violations(res)
    return res


def _compile_into(job: Job, cache: Path, res: Result) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn, _ = _kernel_params(job.module, job.kernel)
    target = GPUTarget("cuda", job.arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(job.constexprs, **job.options)
    bound, specialization, opts = binder(*_binder_inputs(job), **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, opts)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):  # the ptxas -v log Triton prints (TRITON_DUMP_PTXAS_LOG)
        kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                                options=options.__dict__)
    res.compile_s = time.perf_counter() - start
    res.traps = "trap;" in kernel.asm["ptx"]
    meta = kernel.metadata
    usage = cubin_resources(kernel.asm["cubin"], meta.name)
    res.threads = meta.num_warps * 32 * getattr(meta, "num_ctas", 1)
    res.shared = meta.shared + usage["static_shared"]
    res.registers, res.stack, res.local = usage["registers"], usage["stack"], usage["local"]
    spills = parse_ptxas_spills(log.getvalue())
    side = cache / "ptxas" / f"{kernel.hash}.json"
    res.cached = spills is None
    if spills is None and side.exists():
        spills = tuple(json.loads(side.read_text()))
    if spills is None:
        spills = _ptxas_spills(kernel.asm["ptx"], job.arch)
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text(json.dumps(list(spills)))
    res.spill_stores, res.spill_loads = spills


def violations(r: Result) -> list[str]:
    """The per-block limits of its arch that a compiled kernel breaks (or its compile error)."""
    if r.error:
        return [f"compile failed: {r.error}"]
    arch = ARCHS[r.arch]
    out = []
    if r.shared > arch.max_shared:
        out.append(f"shared memory {r.shared} B > {arch.max_shared} B")
    if r.registers > arch.max_regs_per_thread:
        out.append(f"{r.registers} registers per thread > {arch.max_regs_per_thread}")
    if r.registers * r.threads > arch.max_regs_per_block:
        out.append(f"{r.registers} registers x {r.threads} threads > {arch.max_regs_per_block}")
    if r.spill_stores or r.spill_loads or r.local:
        out.append(f"spills: {r.spill_stores} B stored, {r.spill_loads} B loaded, local memory {r.local} B")
    return out


def _serve(cache: Path) -> None:
    """Worker loop: one JSON job per stdin line, one result line (prefixed MARK) per job on stdout."""
    for line in sys.stdin:
        if not line.strip():
            continue
        res = compile_job(Job(**json.loads(line)), cache)
        sys.stdout.write(MARK + json.dumps(asdict(res)) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- compile (parent side)
def _worker_env(cache: Path) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(cache / "triton"),
               TRITON_DUMP_PTXAS_LOG="1")  # triton prints the ptxas -v log of each compile
    env.pop("TRITON_ALWAYS_COMPILE", None)
    return env


def _feed(proc: subprocess.Popen, todo: queue.Queue, done: list) -> None:
    """Give one worker jobs until none are left; collect its results."""
    while True:
        try:
            i, job = todo.get_nowait()
        except queue.Empty:
            break
        try:
            proc.stdin.write(json.dumps(asdict(job)) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            todo.put((i, job))  # for another worker; this one has died
            break
        for line in proc.stdout:
            if line.startswith(MARK):
                done.append((i, Result(**json.loads(line[len(MARK):]))))
                break
        else:
            done.append((i, Result(job.kernel, job.case, job.dtype, job.head, job.config, job.arch,
                                   error="the worker process died", violations=["compile failed: worker died"])))
            break
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()


def compile_all(jobs: list[Job], workers: int, cache: Path) -> list[Result]:
    """Compile every job in ``workers`` processes (TRITON_INTERPRET=0, Triton cache
    under ``cache``); results in job order, the slow attention jobs started first."""
    cache.mkdir(parents=True, exist_ok=True)
    todo: queue.Queue = queue.Queue()
    for i in sorted(range(len(jobs)), key=lambda i: (not jobs[i].kernel.startswith("attention"), i)):
        todo.put((i, jobs[i]))
    done: list = []
    procs, threads = [], []
    for _ in range(max(1, min(workers, len(jobs)))):
        proc = subprocess.Popen([sys.executable, "-m", "maven_fast.triton_aot", "--serve", "--cache", str(cache)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_worker_env(cache))
        procs.append(proc)
        threads.append(threading.Thread(target=_feed, args=(proc, todo, done), daemon=True))
        threads[-1].start()
    for t in threads:
        t.join()
    for proc in procs:
        proc.wait()
    missing = set(range(len(jobs))) - {i for i, _ in done}
    for i in missing:  # every worker died before reaching these
        j = jobs[i]
        done.append((i, Result(j.kernel, j.case, j.dtype, j.head, j.config, j.arch, error="not compiled",
                               violations=["compile failed: not compiled (workers died)"])))
    return [r for _, r in sorted(done, key=lambda x: x[0])]


# --------------------------------------------------------------------------- report
def summary(results: list[Result]) -> list[str]:
    """Per kernel and arch: compiles, maximum shared memory and registers, spills, compile time."""
    lines = ["| kernel | arch | compiles | max shared memory (B) | max registers | spilling | compile time (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    keys = sorted({(r.kernel, r.arch) for r in results})
    for kernel, arch in keys:
        rs = [r for r in results if (r.kernel, r.arch) == (kernel, arch)]
        lines.append(f"| {kernel} | sm_{arch} | {len(rs)} | {max(r.shared for r in rs)} | "
                     f"{max(r.registers for r in rs)} | {sum(1 for r in rs if r.spill_stores or r.spill_loads)} | "
                     f"{sum(r.compile_s for r in rs):.1f} |")
    return lines


def markdown(results: list[Result], wall_s: float, workers: int, cold: bool) -> str:
    """The committed table: one row per compile, over-limit rows marked."""
    import platform

    import torch
    import triton

    bad = [r for r in results if r.violations]
    head = [
        "# Triton kernels compiled ahead of time for sm_80 and sm_90",
        "",
        "Written by `python -m maven_fast.triton_aot --out bench/results/triton-aot.md` "
        f"(Triton {triton.__version__}, torch {torch.__version__}, {platform.machine()}, no GPU: "
        "`triton.compile(..., target=GPUTarget(\"cuda\", cc, 32))`). What is compiled and why is in the "
        "docstring of maven_fast/triton_aot.py; `tests/test_triton_aot.py` compiles the same matrix in "
        "every test run and fails on any row over a limit.",
        "",
        f"- {len(results)} compiles, {workers} worker processes, {'cold' if cold else 'warm'} Triton cache, "
        f"{wall_s:.0f} s wall, {sum(r.compile_s for r in results):.0f} s of compile time in all.",
        f"- Limits per block: shared memory (dynamic + static) <= {ARCHS[80].max_shared} B on sm_80, "
        f"<= {ARCHS[90].max_shared} B on sm_90; <= 255 registers per thread and <= 65,536 per block; "
        "no spills (ptxas spill stores and loads 0, no local memory in the cubin).",
        f"- Over a limit: **{len(bad)}**.",
        "- shared: bytes per block; registers: per thread (cuobjdump -res-usage of the cubin); spills: "
        "ptxas spill store / load bytes; time: seconds of `triton.compile` for that row "
        f"({'from a cold cache' if cold else 'warm cache: not compile times'}).",
        "",
        "## Summary",
        "",
        *summary(results),
        "",
        "## Every compile",
        "",
        "| kernel | case | config | dtype | head size | arch | shared (B) | registers | threads | spills (B) "
        "| time (s) | over a limit |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    rows = [f"| {r.kernel} | {r.case} | {r.config} | {r.dtype} | {r.head} | sm_{r.arch} | {r.shared} | "
            f"{r.registers} | {r.threads} | {r.spill_stores}/{r.spill_loads} | {r.compile_s:.2f} | "
            f"{'; '.join(r.violations)} |" for r in results]
    return "\n".join(head + rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the Markdown table here")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--cache", type=Path, help="Triton cache root (default: a fresh temporary one, so "
                                               "the compile times are cold)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        _serve(args.cache)
        return 0
    with contextlib.ExitStack() as stack:
        cache = args.cache or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="triton-aot-")))
        jobs = all_jobs()
        start = time.perf_counter()
        results = compile_all(jobs, args.jobs, cache)
        wall = time.perf_counter() - start
    text = markdown(results, wall, args.jobs, cold=not any(r.cached for r in results))
    if args.out:
        args.out.write_text(text)
    print("\n".join(summary(results)))
    bad = [r for r in results if r.violations]
    for r in bad:
        print(f"OVER A LIMIT: {r.label}: {'; '.join(r.violations)}")
    print(f"{len(results)} compiles in {wall:.0f} s, {len(bad)} over a limit")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
