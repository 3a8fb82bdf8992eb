"""The training-step suite: one full optimisation step of the full-size MAVEN
model from cached-feature-shaped inputs, per variant, on the same batch.

A step is what ``maven_fast.train.Trainer`` does per batch: forward with the
targets (the loss), ``zero_grad``, backward, ``clip_grad_norm_(1.0)`` and the
project's Adam update (``build_optimizer`` of the default TrainConfig: lr
1e-4, weight decay 1e-4), in fp32 with the preset's dropout. Inputs are random
tensors of the real shapes (no cache needed): batch 16, encoder widths
1024/768/768, video Tv = 64 frames; ``reference_mlp`` takes pooled audio/text,
``paper`` sequences (Ta, Tt) = (100, 32); lengths are drawn in [T/2, T]
(item 0 full), as in a padded cache batch.

Variants: ``eager`` (``MAVEN(cfg, backend="eager")``), ``torch.compile(eager)``
(compile time reported separately, as the first step's time) and every fused
backend of the model, in fp32; and in bf16 (``torch.autocast("cpu"|"cuda",
torch.bfloat16)`` around the forward, fp32 parameters and optimizer, as the
trainer's ``run.autocast=bf16`` does): ``eager bf16`` and every fused backend
``... bf16``. Each starts from the same weights. Before timing, each variant's
loss and gradients are checked against eager fp32 on the same batch with
dropout off (a config copy with every dropout at 0; the timed models keep the
preset's dropout): fp32 variants within RTOL/ATOL; bf16 variants by the SPEC 5
rule for reduced precision (:func:`~maven_fast.benchmark.checks.check_reduced`):
relative RMS error pooled over the loss and every gradient <= 2x that of eager
bf16 + 1e-3, and <= 4x eager bf16's + 4 x 2^-8 (four units of bf16 roundoff)
on every single tensor. Speed-ups are against eager fp32; the bf16 rows are
measurements of pass ``train step bf16``.

Work per step: :func:`maven_fast.benchmark.flops.maven_step_flops` (3x the
forward FLOPs of every Linear and attention product, less the input gradients
of the modality projections), on the padded shapes, so
GFLOP/s = step FLOPs / median time. samples/s = B / time; frames/s counts the
valid frames (sum of video lengths), as the trainer logs them.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from maven_fast.backends import BackendUnavailable
from maven_fast.benchmark.checks import REDUCED_FACTOR, REDUCED_FLOOR, check_close, check_reduced, roundoff_units
from maven_fast.benchmark.flops import maven_step_flops
from maven_fast.benchmark.memory import memory_method, peak_memory_mib
from maven_fast.benchmark.report import Section, Table
from maven_fast.benchmark.results import (Measurement, Skipped, SuiteResult, VariantMismatch, describe_error,
                                          fused_backends, skipped_lines)
from maven_fast.benchmark.timing import time_interleaved
from maven_fast.config import MavenConfig

NAME = "train_step"
PASS = "train step"
BATCH = 16
#: (Tv, Ta, Tt) per preset; 1 = pooled.
SHAPES = {"reference_mlp": (64, 1, 1), "paper": (64, 100, 32)}
#: loss and every gradient must agree with eager: max|d| <= ATOL + RTOL max|eager| per tensor (fp32).
RTOL, ATOL = 1e-3, 1e-7
#: bf16 variants: relative RMS error vs eager fp32 <= BF16_FACTOR x eager bf16's + BF16_FLOOR, pooled over the
#: tensors.
BF16_FACTOR, BF16_FLOOR = REDUCED_FACTOR, REDUCED_FLOOR
#: ... and per tensor at most 2 BF16_FACTOR x eager bf16's + BF16_TENSOR_FLOOR (4 units of bf16's roundoff 2^-8).
BF16_TENSOR_FLOOR = roundoff_units(torch.bfloat16)
PASSES = {None: PASS, torch.bfloat16: "train step bf16"}
PRECISION = {None: "fp32", torch.bfloat16: "bf16"}

Build = Callable[[MavenConfig, dict, torch.device], tuple[nn.Module, Callable]]


@dataclass
class StepVariant:
    """``build(config, state_dict, device) -> (module owning the parameters, forward callable)``;
    ``amp``: the autocast dtype of the forward (None: fp32)."""

    name: str
    kind: str
    build: Build
    amp: torch.dtype | None = None


@dataclass
class StepBatch:
    inputs: dict
    targets: torch.Tensor
    mask: torch.Tensor

    @property
    def valid_frames(self) -> int:
        return int(self.inputs["video_lengths"].sum())


def no_dropout(config: MavenConfig) -> MavenConfig:
    """A copy of ``config`` with every dropout (and drop path) probability at 0."""
    cfg = copy.deepcopy(config)
    cfg.cross_modal.dropout = 0.0
    cfg.regressor.dropouts = (0.0, 0.0)
    cfg.beit.hidden_dropout_prob = cfg.beit.attention_probs_dropout_prob = cfg.beit.drop_path_rate = 0.0
    return cfg


def make_batch(config: MavenConfig, batch: int, tv: int, ta: int, tt: int, device, seed: int = 0) -> StepBatch:
    """Random inputs of the real shapes (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    enc = config.encoders

    def lengths(t: int) -> torch.Tensor:
        n = torch.randint(max(1, t // 2), t + 1, (batch,), generator=g)
        n[0] = t
        return n

    inputs = {"video": torch.randn(batch, tv, enc.video_dim, generator=g), "video_lengths": lengths(tv)}
    if config.pooled_inputs:
        inputs.update(audio=torch.randn(batch, enc.audio_dim, generator=g),
                      text=torch.randn(batch, enc.text_dim, generator=g))
    else:
        inputs.update(audio=torch.randn(batch, ta, enc.audio_dim, generator=g), audio_lengths=lengths(ta),
                      text=torch.randn(batch, tt, enc.text_dim, generator=g), text_lengths=lengths(tt))
    targets = torch.rand(batch, tv, 2, generator=g) * 2 - 1
    mask = torch.rand(batch, tv, generator=g) > 0.1
    to = lambda t: t.to(device)  # noqa: E731
    return StepBatch({k: to(v) for k, v in inputs.items()}, to(targets), to(mask))


def _model(config: MavenConfig, state: dict, device, backend: str = "eager") -> nn.Module:
    from maven_fast.model import MAVEN

    model = MAVEN(config, backend="eager")
    model.load_state_dict(state)
    model.to(device).train()
    if backend != "eager":
        model.set_backend(backend)  # BackendUnavailable when the model cannot run it
    return model


def step_variants(device: torch.device, include_compile: bool = True, bf16: bool = True
                  ) -> tuple[list[StepVariant], list[Skipped]]:
    """Every variant that may run on ``device``; fused backends the device cannot run are skipped here,
    those the model cannot run yet are skipped when built (``BackendUnavailable``). ``bf16``: add
    the bf16-autocast versions of eager and of every fused backend."""
    def eager(cfg, state, dev):
        m = _model(cfg, state, dev)
        return m, m

    def compiled(mode: str | None):
        def build(cfg, state, dev):
            m = _model(cfg, state, dev)
            return m, torch.compile(m, mode=mode)
        return build

    variants = [StepVariant("eager", "eager", eager)]
    skipped = []
    if include_compile:
        variants.append(StepVariant("torch.compile(eager)", "baseline", compiled(None)))
        if device.type == "cuda":
            variants.append(StepVariant("torch.compile(eager, reduce-overhead)", "baseline",
                                        compiled("reduce-overhead")))
    else:
        skipped.append(Skipped("torch.compile(eager)", "left out (--quick): compiling the full model takes "
                                                       "minutes on a small CPU; run without --quick"))
    backends, not_here = fused_backends(device)
    skipped += not_here
    for backend in backends:

        def fused(cfg, state, dev, _b=backend):
            m = _model(cfg, state, dev, _b)
            return m, m
        variants.append(StepVariant(f"maven_fast {backend}", "fused", fused))
    if bf16:
        variants += [StepVariant(f"{v.name} bf16", "baseline" if v.kind == "eager" else v.kind, v.build, torch.bfloat16)
                     for v in variants if v.kind != "baseline"]
        if include_compile:
            skipped.append(Skipped("torch.compile(eager) bf16", "left out: one compiled variant (fp32) is enough "
                                                                "to show compile's effect; compiling costs minutes"))
    return variants, skipped


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    from maven_fast.train.config import TrainConfig
    from maven_fast.train.trainer import build_optimizer

    return build_optimizer(TrainConfig(), model.parameters())


def _autocast(device, amp: torch.dtype | None):
    return torch.autocast(torch.device(device).type, dtype=amp) if amp else contextlib.nullcontext()


def make_step(model: nn.Module, forward: Callable, batch: StepBatch, clip: float = 1.0,
              amp: torch.dtype | None = None) -> Callable[[], None]:
    """One Trainer step: forward with targets (under autocast to ``amp``), zero_grad, backward, clip, Adam."""
    optimizer = _optimizer(model)
    device = batch.targets.device

    def step() -> None:
        with _autocast(device, amp):
            out = forward(**batch.inputs, targets=batch.targets, mask=batch.mask)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    return step


def loss_and_grads(model: nn.Module, forward: Callable, batch: StepBatch,
                   amp: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The loss and the gradient of every parameter (by name) on ``batch``; no update."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    with _autocast(batch.targets.device, amp):
        out = forward(**batch.inputs, targets=batch.targets, mask=batch.mask)
    grads = torch.autograd.grad(out.loss, params, allow_unused=True)
    result = {"loss": out.loss.detach()}
    result.update({f"grad {n}": (torch.zeros_like(p) if g is None else g) for n, p, g in zip(names, params, grads)})
    return result


def checked_variants(variants, config, state, batch, device) -> tuple[list[StepVariant], list[Skipped], dict]:
    """Variants whose dropout-off loss and gradients equal eager's (fp32: within RTOL/ATOL; bf16: the
    reduced-precision rule against eager bf16, see the module docstring); the others raise
    :class:`VariantMismatch`, except those that cannot be built (skipped with the reason)."""
    cfg = no_dropout(config)
    reference = loss_and_grads(*variants[0].build(cfg, state, device), batch)
    ok, skipped, worst = [variants[0]], [], {variants[0].name: 0.0}
    eager_reduced: dict = {}
    for v in variants[1:]:
        try:
            model, forward = v.build(cfg, state, device)
            got = loss_and_grads(model, forward, batch, v.amp)
        except BackendUnavailable as exc:
            skipped.append(Skipped(v.name, " ".join(str(exc).split())))
            continue
        except Exception as exc:  # torch.compile failures: reported, not hidden, not fatal
            if v.kind != "baseline":
                raise
            skipped.append(Skipped(v.name, describe_error(exc)))
            continue
        if v.amp is None:
            worst[v.name] = check_close(v.name, got, reference, RTOL, ATOL)
        elif v.kind != "fused":  # eager in this precision: the yardstick of the fused variants
            eager_reduced[v.amp] = got
            worst[v.name] = check_reduced(v.name, got, reference, got, BF16_FACTOR, BF16_FLOOR, ATOL,
                                          tensor_floor=BF16_TENSOR_FLOOR)
        elif v.amp not in eager_reduced:
            raise VariantMismatch(f"{v.name}: no eager {PRECISION[v.amp]} variant ran to compare it with")
        else:
            worst[v.name] = check_reduced(v.name, got, reference, eager_reduced[v.amp], BF16_FACTOR, BF16_FLOOR, ATOL,
                                          tensor_floor=BF16_TENSOR_FLOOR)
        ok.append(v)
    return ok, skipped, worst


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inductor_cache_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return c["fxgraph_cache_hit"], c["fxgraph_cache_miss"]


def first_steps(ok: list[StepVariant], cfg, state, data: StepBatch, dev, preset: str,
                skipped: list[Skipped], notes: list[str]) -> tuple[dict, dict]:
    """Builds each checked variant's timed model and step and runs its first step (not in the
    timings; for torch.compile the compile time). A compile mode that fails here is skipped."""
    steps, first = {}, {}
    for v in list(ok):
        model, forward = v.build(cfg, state, dev)
        step = make_step(model, forward, data, amp=v.amp)
        before = _inductor_cache_counts()
        t0 = time.perf_counter()
        try:
            step()
        except Exception as exc:  # a torch.compile mode failing on the dropout graph: reported
            if v.kind != "baseline":
                raise
            ok.remove(v)
            skipped.append(Skipped(v.name, describe_error(exc)))
            continue
        _sync(dev)
        first[v.name] = time.perf_counter() - t0
        steps[v.name] = step
        hits, misses = (a - b for a, b in zip(_inductor_cache_counts(), before))
        if hits or misses:
            notes.append(f"{preset}, {v.name}: first step {first[v.name]:.1f} s compiles forward and backward "
                         f"(inductor FX-graph cache: {hits} hits, {misses} misses)")
    return steps, first


def method_notes(dev: torch.device) -> list[str]:
    from maven_fast.train.config import TrainConfig

    o = TrainConfig().optim
    return [
        "Same batch, initial weights and seed for every variant; a step = forward + loss + backward + "
        f"clip_grad_norm_(1.0) + {o.optimizer} (lr {o.lr:g}, weight decay {o.weight_decay:g}), preset dropout; "
        "fp32, or bf16: the forward under torch.autocast(bfloat16) with fp32 parameters, gradients and optimizer "
        "(run.autocast=bf16).",
        f"Checked before timing: loss and every parameter gradient vs eager fp32 on the same batch, dropout off: "
        f"fp32 max|d| <= {ATOL:g} + {RTOL:g} max|eager| per tensor; bf16 relative RMS error <= {BF16_FACTOR:g}x "
        f"eager bf16's + {BF16_FLOOR:g} pooled over the loss and every gradient, <= {2 * BF16_FACTOR:g}x + "
        f"{BF16_TENSOR_FLOOR:.3g} (4 units of bf16 roundoff) on each.",
        "Speed-up: eager fp32 median / variant median; % of GEMM rate: of the fp32 GEMM rate for fp32 rows, of the "
        "bf16 GEMM rate for bf16 rows (n/a where it was not measured: a CPU without native bf16).",
        "GFLOP/s = maven_step_flops / median (3x forward Linear + attention FLOPs, less the projections' input "
        "gradients): eager's work, so for a fused variant that skips work it is an effective rate (it can exceed "
        "the GEMM rate); frames/s counts valid frames.",
        f"peak MiB: {memory_method(dev)}, one step, measured after the timings.",
        "first step s: not in the timings; for torch.compile it is the compile time.",
    ]


def run_train_step(
    device: str = "cpu",
    presets: tuple[str, ...] = ("reference_mlp", "paper"),
    rounds: int = 10,
    gemm_gflops: float | None = None,
    include_compile: bool = True,
    batch: int = BATCH,
    seed: int = 0,
    config_for: Callable[[str], MavenConfig] = MavenConfig.preset,
    extra_variants: list[StepVariant] = (),
    bf16: bool = True,
    gemm_bf16_gflops: float | None = None,
    bf16_presets: tuple[str, ...] | None = None,
    bf16_left_out_reason: str = "",
) -> SuiteResult:
    """Checks, then times every variant per preset (module docstring); ``gemm_gflops``
    (the machine's fp32 GEMM rate; ``gemm_bf16_gflops`` for the bf16 rows) adds a % column.
    ``bf16``: the bf16-autocast variants too, for the presets in ``bf16_presets`` (None: all; the
    others are listed as left out with ``bf16_left_out_reason``). ``config_for``/``batch`` let tests
    use tiny models; ``extra_variants`` adds variants (a wrong one must fail the run)."""
    dev = torch.device(device)
    variants, skipped = step_variants(dev, include_compile, bf16)
    variants += list(extra_variants)
    header = ["preset", "variant", "precision", "median ms", "p20 ms", "p80 ms", "samples/s", "frames/s",
              "speed-up vs eager", "GFLOP/s"] + (["% of GEMM rate"] if gemm_gflops else []) + ["peak MiB",
                                                                                            "first step s"]
    table = Table(f"Training step, {dev.type}, batch {batch}", header)
    measurements: list[Measurement] = []
    notes: list[str] = []
    for preset in presets:
        cfg = config_for(preset)
        here = variants
        if bf16 and bf16_presets is not None and preset not in bf16_presets:
            here = [v for v in variants if v.amp is None]
            skipped += [Skipped(f"{preset}: {v.name}", f"left out: {bf16_left_out_reason}")
                        for v in variants if v.amp is not None]
        tv, ta, tt = SHAPES[cfg.variant]
        state = _initial_state(cfg, seed)
        data = make_batch(cfg, batch, tv, ta, tt, dev, seed)
        ok, skipped_here, worst = checked_variants(here, cfg, state, data, dev)
        skipped += [s for s in skipped_here if all(s.variant != k.variant for k in skipped)]
        steps, first = first_steps(ok, cfg, state, data, dev, preset, skipped, notes)
        timings = time_interleaved(steps, dev, rounds=rounds, warmup=1)
        memory = {name: peak_memory_mib(fn, dev) for name, fn in steps.items()}
        flops = maven_step_flops(cfg, batch, tv, ta, tt)
        kinds = {v.name: v.kind for v in ok}
        amps = {v.name: v.amp for v in ok}
        base = timings["eager"].median
        for name, t in timings.items():
            sec = t.median * 1e-3
            gflops = flops / sec / 1e9
            row = [preset, name, PRECISION[amps[name]], t.median, t.p20, t.p80, batch / sec,
                   data.valid_frames / sec, base / t.median, gflops]
            if gemm_gflops:
                rate = gemm_gflops if amps[name] is None else gemm_bf16_gflops
                row += [100 * gflops / rate if rate else "n/a"]
            row += ["n/a" if memory[name] is None else memory[name], first[name]]
            table.rows.append(row)
            measurements.append(Measurement(NAME, preset, PASSES[amps[name]], name, kinds[name], t, base / t.median,
                                            flops))
        checked = ", ".join(f"{k} {w:.2g}" for k, w in worst.items() if k != "eager") or "only eager ran"
        notes.append(f"{preset}: (Tv, Ta, Tt) = {(tv, ta, tt)}, {flops / 1e9:.3g} GFLOP per step; largest check "
                     f"error / tolerance: {checked}")
    table.notes = method_notes(dev) + notes + skipped_lines(skipped)
    return SuiteResult(NAME, Section("Training step", [table]), measurements, skipped)


def _initial_state(cfg: MavenConfig, seed: int) -> dict:
    """The weights every variant starts from: ``MAVEN(cfg)`` initialised under ``torch.manual_seed(seed)``."""
    from maven_fast.model import MAVEN

    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in MAVEN(cfg).state_dict().items()}
