"""SPEC 6's CPU targets, judged from one benchmark run.

Each target is "met", "not met" or "not measured (reason)", with the measured
ratio. The fused figure is the fastest fused backend on that case; ratios are
of median times (speed-up = eager median / fused median).

* cross-modal block fwd+bwd, ``reference_mlp`` shapes: speed-up >= 10;
* cross-modal block fwd+bwd, each ``paper`` shape: faster than eager,
  eager+SDPA and torch.compile(eager) (ratio = fastest of those / fused > 1),
  and >= 90% of the measured fp32 GEMM rate on the FLOPs it must do (the
  FLOPs the fused op executes with its shortcuts, ``cross_modal_executed_flops``,
  per second / GEMM GFLOP/s; the effective rate on the general-path count is
  shown next to it);
* training step, ``reference_mlp``: fused samples/s >= 2x eager;
* training accuracy: validation P of fused training within 0.01 of eager.

and, in :func:`spec6_gpu_targets`, the GPU ones: cross-modal block fwd+bwd
at T <= 64 (``reference_mlp`` (64, 1, 1) and ``paper`` (64, 64, 32)) >= 10x
eager and >= 2x torch.compile(eager, reduce-overhead); on the packed problem
T = 512 (bf16) >= 80% of the throughput of the block on torch's flash SDPA
(ratio = SDPA flash median / fused median).
"""
from __future__ import annotations

from maven_fast.benchmark.accuracy import P_TOLERANCE, paired_standard_error
from maven_fast.benchmark.report import Table
from maven_fast.benchmark.results import Measurement, SuiteResult

MET, NOT_MET = "met", "not met"
CROSS_REF_CASE = "reference_mlp (64, 1, 1)"
CROSS_PAPER_CASES = ("paper (64, 100, 32)", "paper (256, 400, 64)")
CROSS_PAPER_BF16_CASES = ("paper (64, 100, 32) bf16", "paper (256, 400, 64) bf16")
GPU_SHORT_CASES = ("reference_mlp (64, 1, 1)", "paper (64, 64, 32)")
GPU_PACKED_CASE = "packed (512, 512, 512) bf16"
REDUCE_OVERHEAD = "torch.compile(eager, reduce-overhead)"
BASELINES = ("eager", "eager+SDPA", "torch.compile(eager)")
FWD_BWD = "forward+backward"
MAX_REASON = 220


def not_measured(reason: str) -> str:
    reason = " ".join(reason.split())
    return f"not measured ({reason[:MAX_REASON] + '...' if len(reason) > MAX_REASON else reason})"


def _suite(results: dict[str, SuiteResult], name: str) -> tuple[SuiteResult | None, str]:
    r = results.get(name)
    if r is None:
        return None, f"the {name} suite was not run"
    if not r.available:
        return None, r.reason
    return r, ""


def _fused_reason(r: SuiteResult, device: str) -> str:
    own = ("cpu",) if device == "cpu" else ("cuda", "triton")
    skips = [s for s in r.skipped if "maven_fast" in s.variant and s.variant.endswith(own)] or \
        [s for s in r.skipped if "maven_fast" in s.variant]
    return "no fused backend ran" + (": " + "; ".join(f"{s.variant}: {s.reason}" for s in skips) if skips else "")


def _best_fused(r: SuiteResult, case: str, pass_name: str, device: str) -> tuple[Measurement | None, str]:
    if not r.find(case, pass_name):
        return None, f"case {case} was not run (e.g. --quick)"
    fused = r.find(case, pass_name, kind="fused")
    if not fused:
        return None, _fused_reason(r, device)
    return min(fused, key=lambda m: m.timing.median), ""


def _judge(ok: bool, measured: str) -> tuple[str, str]:
    return measured, MET if ok else NOT_MET


def _cross_target(cross: SuiteResult | None, reason: str, case: str, device: str, judge):
    """``measure()`` of a cross-modal block target: ``judge(m) -> (measured, status)`` on the
    fastest fused forward+backward measurement of ``case``, or why there is none."""
    def measure():
        if cross is None:
            return "-", not_measured(reason)
        m, why = _best_fused(cross, case, FWD_BWD, device)
        if m is None:
            return "-", not_measured(why)
        return judge(m)
    return measure


def spec6_targets(results: dict[str, SuiteResult], gemm_fp32: float | None, device: str = "cpu",
                  gemm_bf16: float | None = None, bf16_reason: str = "the bf16 GEMM rate was not measured") -> Table:
    """The targets table (module docstring); ``gemm_fp32`` (``gemm_bf16``) is the machine's measured
    fp32 (bf16) GFLOP/s; ``bf16_reason``: why there is no bf16 rate."""
    header = ["target", "case", "requirement", "measured", "status"]
    rows: list[list[object]] = []
    wrong_device = None if device == "cpu" else f"this run is on {device}; these are CPU targets (--device cpu)"

    def add(target, case, requirement, measure):
        if wrong_device:
            rows.append([target, case, requirement, "-", not_measured(wrong_device)])
            return
        measured, status = measure()
        rows.append([target, case, requirement, measured, status])

    cross, cross_reason = _suite(results, "cross_modal")

    def speedup(m):
        return _judge(m.speedup >= 10, f"{m.speedup:.2f}x ({m.variant} vs eager)")

    def faster(case):
        def judge(m):
            base = {b: cross.find(case, FWD_BWD, variant=b) for b in BASELINES}
            missing = [b for b, ms in base.items() if not ms]
            if missing:
                return "-", not_measured(f"{', '.join(missing)} not measured")
            fastest = min((ms[0] for ms in base.values()), key=lambda x: x.timing.median)
            ratio = fastest.timing.median / m.timing.median
            return _judge(ratio > 1, f"{ratio:.2f}x ({m.variant} vs {fastest.variant}, the fastest of them)")
        return judge

    def gemm_fraction(m):
        if not gemm_fp32:
            return "-", not_measured("the GEMM rate was not measured")
        ratio = m.executed_gflops / gemm_fp32
        return _judge(ratio >= 0.9, f"{ratio:.0%} ({m.variant}: {m.executed_gflops:.0f} executed GFLOP/s of "
                                    f"{gemm_fp32:.0f}; effective {m.gflops / gemm_fp32:.0%})")

    def target(case, judge):
        return _cross_target(cross, cross_reason, case, device, judge)

    def gemm_fraction_bf16(m):
        ratio = m.executed_gflops / gemm_bf16
        return _judge(ratio >= 0.9, f"{ratio:.0%} ({m.variant}: {m.executed_gflops:.0f} executed GFLOP/s of "
                                    f"{gemm_bf16:.0f}; effective {m.gflops / gemm_bf16:.0%})")

    add("cross-modal block fwd+bwd", CROSS_REF_CASE, ">= 10x eager", target(CROSS_REF_CASE, speedup))
    for case in CROSS_PAPER_CASES:
        add("cross-modal block fwd+bwd", case, "faster than eager, eager+SDPA and torch.compile(eager)",
            target(case, faster(case)))
        add("cross-modal block fwd+bwd", case, ">= 90% of the measured fp32 GEMM rate", target(case, gemm_fraction))
    for case in CROSS_PAPER_BF16_CASES:
        measure = target(case, gemm_fraction_bf16) if gemm_bf16 else (
            lambda: ("-", not_measured(cross_reason if cross is None else bf16_reason)))
        add("cross-modal block fwd+bwd", case, ">= 90% of the measured bf16 GEMM rate (issue 16)", measure)

    step, step_reason = _suite(results, "train_step")

    def training():
        if step is None:
            return "-", not_measured(step_reason)
        m, why = _best_fused(step, "reference_mlp", "train step", device)
        if m is None:
            return "-", not_measured(why)
        return _judge(m.speedup >= 2, f"{m.speedup:.2f}x samples/s ({m.variant} vs eager)")

    add("training step from cached features", "reference_mlp", "fused samples/s >= 2x eager", training)

    def bf16_training():
        if step is None:
            return "-", not_measured(step_reason)
        if not step.find("paper", "train step"):
            return "-", not_measured("the paper preset's training step was not run (e.g. --quick)")
        m, why = _best_fused(step, "paper", "train step bf16", device)
        if m is None:
            return "-", not_measured(why if "not run" not in why else "no bf16 variant ran")
        return _judge(m.speedup >= 2, f"{m.speedup:.2f}x samples/s ({m.variant} vs eager fp32)")

    add("training step from cached features", "paper", "fused bf16 samples/s >= 2x eager fp32 (issue 16)",
        bf16_training)

    acc, acc_reason = _suite(results, "accuracy")
    presets = sorted({p for p, _ in acc.extra.get("P", {})}) if acc else ["reference_mlp"]
    for preset in presets:
        def accuracy(preset=preset):
            if acc is None:
                return "-", not_measured(acc_reason)
            p = acc.extra.get("P", {})
            fused = {b: v for (pr, b), v in p.items() if pr == preset and b != "eager" and " " not in b}
            if (preset, "eager") not in p or not fused:
                reasons = [s for s in acc.skipped if s.variant.startswith(preset)]
                return "-", not_measured("no fused backend could train the model" +
                                         (f": {reasons[0].reason}" if reasons else ""))
            seeds = acc.extra.get("P_per_seed", {})

            def gap(b):  # the largest per-seed |dP| (the same function in fp32: seed by seed)
                if (preset, b) in seeds and (preset, "eager") in seeds:
                    return max(abs(x - y) for x, y in zip(seeds[(preset, b)], seeds[(preset, "eager")]))
                return abs(fused[b] - p[(preset, "eager")])
            worst = max(fused, key=gap)
            diff, n = gap(worst), len(seeds.get((preset, worst), [0]))
            return _judge(diff <= P_TOLERANCE, f"|dP| = {diff:.2g} ({worst} vs eager, worst of {n} seed(s))")
        add("training accuracy (synthetic data, same seeds)", preset, f"validation P within {P_TOLERANCE} of eager",
            accuracy)

        def bf16_accuracy(preset=preset):
            if acc is None:
                return "-", not_measured(acc_reason)
            p = acc.extra.get("P", {})
            pairs = {b.split(" ")[0]: (p[(pr, b.split(" ")[0])], v) for (pr, b), v in p.items()
                     if pr == preset and b.endswith(" bf16") and (pr, b.split(" ")[0]) in p}
            if not pairs:
                return "-", not_measured("no bf16 training ran next to an fp32 one")
            worst = max(pairs, key=lambda b: abs(pairs[b][1] - pairs[b][0]))
            diff = abs(pairs[worst][1] - pairs[worst][0])
            seeds = acc.extra.get("P_per_seed", {})
            b16, f32 = seeds.get((preset, f"{worst} bf16"), []), seeds.get((preset, worst), [])
            se = f", s.e. {paired_standard_error(b16, f32):.2g}" if len(b16) > 1 and len(b16) == len(f32) else ""
            return _judge(diff <= P_TOLERANCE, f"|dP| = {diff:.2g} ({worst} bf16 vs {worst} fp32, means over "
                                               f"{max(1, len(b16))} seed(s){se}; {len(pairs)} backend(s))")
        add("bf16 training accuracy (synthetic data, same seeds)", preset,
            f"validation P of bf16 training within {P_TOLERANCE} of fp32 training", bf16_accuracy)
    return Table("CPU targets", header, rows, notes=[
        "The fused figure is the fastest fused backend on the case; ratios are of median times.",
        "GEMM fraction: the FLOPs the fused op executes (cross_modal_executed_flops of its pathway plan) per "
        "second over the fp32 GEMM rate measured in this run; 'effective' counts the general-path FLOPs instead.",
    ])


def spec6_gpu_targets(results: dict[str, SuiteResult], device: str = "cuda") -> Table:
    """SPEC 6's GPU targets for the cross-modal block (module docstring)."""
    header = ["target", "case", "requirement", "measured", "status"]
    rows: list[list[object]] = []
    cross, cross_reason = _suite(results, "cross_modal")
    if device != "cuda":
        cross, cross_reason = None, f"this run is on {device}; these are GPU targets (--device cuda)"

    def versus(case, baseline, need, what):
        def judge(m):
            base = cross.find(case, FWD_BWD, variant=baseline)
            if not base:
                return "-", not_measured(f"{baseline} was not measured" + _skip_reason(cross, baseline))
            ratio = base[0].timing.median / m.timing.median
            return _judge(ratio >= need, f"{ratio:.2f}x ({m.variant} vs {baseline}{what})")
        return _cross_target(cross, cross_reason, case, device, judge)()

    for case in GPU_SHORT_CASES:
        rows.append(["cross-modal block fwd+bwd", case, ">= 10x eager", *versus(case, "eager", 10, "")])
        rows.append(["cross-modal block fwd+bwd", case, ">= 2x torch.compile(eager, reduce-overhead)",
                     *versus(case, REDUCE_OVERHEAD, 2, "")])
    rows.append(["cross-modal block fwd+bwd", GPU_PACKED_CASE, ">= 80% of the throughput on torch flash SDPA",
                 *versus(GPU_PACKED_CASE, "SDPA flash", 0.8, "; throughput ratio")])
    return Table("GPU targets", header, rows, notes=[
        "The fused figure is the fastest fused backend on the case; ratios are of median device times "
        "(baseline median / fused median).",
    ])


def _skip_reason(result: SuiteResult, variant: str) -> str:
    reasons = [s.reason for s in result.skipped if s.variant == variant]
    return f": {reasons[0]}" if reasons else ""
