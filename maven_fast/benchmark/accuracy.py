"""Accuracy next to speed: validation P of eager vs fused training on the
synthetic dataset, same data and seed (issue 9, SPEC 6's training target), in
fp32 and in bf16 (``run.autocast=bf16``: the forward under CPU/GPU autocast,
fp32 parameters and optimizer; issue 16).

The synthetic dataset (:func:`maven_fast.data.make_synthetic_dataset`) goes
through the tiny encoders (``load_encoders("tiny")``) into a feature cache in a
temporary directory; each preset is then trained by
:func:`maven_fast.train.api.train` once with ``run.backend=eager`` and once per
fused backend the model can run, each in fp32 and in bf16, with the same config
otherwise. A backend the model cannot run yet is reported with the reason,
never replaced.

The models are small (:data:`MODEL_OVERRIDES`, stated in the report) and
dropout is off, so that eager and fused compute the same function and the
comparison is of the implementations, not of dropout draws (issue 8's parity
rule). P = (CCC_v + CCC_a) / 2 per frame over the validation split.

Each run is repeated for every seed of ``seeds`` (model initialisation and
batch order; the data stay the same) and the table gives the mean over seeds,
their spread and the largest per-seed difference. fp32 eager and fused training
compute the same function in another summation order, so they agree closely on
most seeds (measured over 30 seeds: means 0.0019 apart; the worst `paper` seed
0.042, one whose final P moves by as much when its initial weights move by one
ulp: ``bench/accuracy_sensitivity.py``); bf16 and fp32 training do not: rounding
changes the trajectory, and on a dataset this small one seed's final P moves by
a few hundredths with it (measured: eager bf16 and fused bf16, the same
precision, 0.036 apart on one seed). Whether bf16 trains as well as
fp32 is therefore judged on the mean over seeds, with the per-seed spread shown.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from maven_fast.backends import BackendUnavailable
from maven_fast.benchmark.report import Section, Table
from maven_fast.benchmark.results import Skipped, SuiteResult, fused_backends, skipped_lines

NAME = "accuracy"
MODEL_OVERRIDES = {
    "cross_modal": {"embed_dim": 32, "num_heads": 2, "dropout": 0.0},
    "beit": {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "drop_path_rate": 0.0,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "regressor": {"hidden_sizes": [32, 16], "dropouts": [0.0, 0.0]},
}
#: P of a fused backend must equal eager's within this (SPEC 6: validation CCC equal within 0.01);
#: P of bf16 training must equal fp32 training's (same backend) within it too (issue 16).
P_TOLERANCE = 0.01
PRECISIONS = ("fp32", "bf16")
AUTOCAST = {"fp32": "none", "bf16": "bf16"}


def run_key(backend: str, precision: str) -> str:
    """The backend key of a run in ``extra["P"]``: ``eager``, ``cpu`` (fp32), ``eager bf16``, ``cpu bf16``."""
    return backend if precision == "fp32" else f"{backend} {precision}"


def build_cache(work_dir: Path, videos_per_split: int, frames: int, seed: int = 1) -> tuple[Path, dict]:
    """Synthetic dataset -> tiny-encoder feature cache; returns (cache dir, encoder signature)."""
    from maven_fast.data import extract_features, make_synthetic_dataset
    from maven_fast.encoders import load_encoders

    encoders = load_encoders("tiny")
    make_synthetic_dataset(work_dir / "data", seed=seed, videos_per_split=videos_per_split, frames=frames,
                           size=32, test_videos=0)
    extract_features(work_dir / "data", work_dir / "cache", encoders, progress=False)
    return work_dir / "cache", encoders.signature()


def train_config(preset: str, backend: str, cache: Path, signature: dict, out_dir: Path, device: str,
                 epochs: int, lr: float, batch_size: int, seed: int, precision: str = "fp32"):
    from maven_fast.config import EncoderConfig
    from maven_fast.train.config import TrainConfig

    enc = EncoderConfig.from_signature(signature)
    model = {"preset": preset, "encoders": vars(enc).copy(), **{k: dict(v) for k, v in MODEL_OVERRIDES.items()}}
    if preset != "paper":
        model.pop("beit")
    return TrainConfig.from_dict({
        "model": model,
        "data": {"cache": str(cache)},
        "optim": {"lr": lr},
        "run": {"out_dir": str(out_dir), "epochs": epochs, "batch_size": batch_size, "seed": seed, "backend": backend,
                "device": device, "progress": False, "tensorboard": False, "autocast": AUTOCAST[precision]},
    })


def fused_candidates(device: str) -> tuple[list[str], list[Skipped]]:
    """Fused backends the device can run (the model may still refuse them)."""
    return fused_backends(device)


def _train(cfg) -> tuple[dict, float]:
    """Trains quietly; restores torch's determinism flag, which the trainer sets. The trainer's
    warning about bf16 on a CPU that emulates it is silenced: the suite trains bf16 there on
    purpose (tiny models; what it compares is accuracy, not speed)."""
    from maven_fast.train.api import train

    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="run.autocast=bf16 on a CPU without", category=RuntimeWarning)
            result = train(cfg)
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
    return {**result["val"], "best_P": result["progress"]["best_P"]}, time.perf_counter() - t0


#: the presets the accuracy suite trains (``maven-fast bench --accuracy-preset`` picks some)
PRESETS = ("reference_mlp", "paper")
#: the suite's optimiser settings (bench/accuracy_sensitivity.py trains with the same)
LR, BATCH_SIZE = 1e-3, 2


def run_accuracy(
    device: str = "cpu",
    presets: tuple[str, ...] = PRESETS,
    epochs: int = 30,
    videos_per_split: int = 3,
    frames: int = 96,
    lr: float = LR,
    batch_size: int = BATCH_SIZE,
    seeds: tuple[int, ...] = (0,),
    precisions: tuple[str, ...] = PRECISIONS,
    progress: bool = True,
) -> SuiteResult:
    """Trains eager and every fused backend per preset, in each of ``precisions``, once per seed of
    ``seeds`` (module docstring); the table holds, as means over the seeds, validation P, CCC_v,
    CCC_a, loss, P - P(eager) in the same precision and, for bf16, P - P(fp32) of the same backend,
    with the spread of P over seeds, the standard error of the paired P - P(fp32) and the largest
    per-seed |P - P(fp32)|. ``progress``: a bar of the trainings on stderr."""
    from tqdm.auto import tqdm

    header = ["preset", "backend", "precision", "seeds", "val P", "P sd over seeds", "CCC_v", "CCC_a", "val MSE",
              "P - P(eager)", "P - P(fp32)", "s.e. of P - P(fp32)", "max per-seed |P - P(fp32)|", "best val P",
              "train s"]
    table = Table(f"Validation P, eager vs fused training, fp32 and bf16 (synthetic data, {device}; "
                  f"mean over {len(seeds)} seed(s))", header)
    candidates, skipped = fused_candidates(device)
    per_seed: dict[tuple[str, str], list[float]] = {}
    trainings = len(presets) * len(precisions) * (1 + len(candidates)) * len(seeds)
    with tempfile.TemporaryDirectory(prefix="maven-bench-accuracy-") as tmp, \
            tqdm(total=trainings, desc="accuracy", unit="training", disable=not progress, dynamic_ncols=True) as bar:
        work = Path(tmp)
        cache, signature = build_cache(work, videos_per_split, frames)
        for preset in presets:
            for precision in precisions:
                for backend in ["eager"] + candidates:
                    key = run_key(backend, precision)
                    bar.set_postfix_str(f"{preset} {key}")
                    runs = []
                    try:
                        for seed in seeds:
                            runs.append(_train(train_config(preset, backend, cache, signature,
                                                            work / f"{preset}-{key.replace(' ', '-')}-seed{seed}",
                                                            device, epochs, lr, batch_size, seed, precision)))
                            bar.update()
                    except BackendUnavailable as exc:
                        bar.update(len(seeds) - len(runs))
                        reason = " ".join(str(exc).split())
                        skipped.append(Skipped(f"{preset}, maven_fast {key}", reason))
                        continue
                    per_seed[(preset, key)] = [val["P"] for val, _ in runs]
                    table.rows.append(_row(preset, backend, precision, runs, per_seed))
    fused_ran = any(" " not in b and b != "eager" for _, b in per_seed)
    table.notes = [
        f"Same synthetic data (seed 1, {videos_per_split} videos + 1 two-person video per split, ~{frames} frames, "
        f"tiny encoders), same config; per seed ({', '.join(map(str, seeds))}: initialisation and batch order) "
        f"every backend and precision starts alike; only run.backend and run.autocast (none: fp32; bf16: "
        f"the forward under bf16 autocast, fp32 weights and optimizer) differ.",
        f"Model overrides (small, dropout off): {MODEL_OVERRIDES}; optim.lr={lr}, run.batch_size={batch_size}, "
        f"run.epochs={epochs}.",
        f"val P, CCC, MSE: after the last epoch, mean over the seeds; best val P: the best epoch's (mean); "
        f"differences are of the means. Targets (final P): |P - P(eager)| <= {P_TOLERANCE} in each precision, "
        f"on every seed; |P(bf16) - P(fp32)| <= {P_TOLERANCE} per backend, of the means over seeds (one seed's "
        f"bf16 and fp32 trajectories part by chance: 's.e. of P - P(fp32)' is the standard error of the paired mean "
        f"difference, how far it can sit from 0 by that chance alone).",
    ]
    if not fused_ran:
        table.notes.append("No fused backend can train the model in this build: only eager is shown "
                           "(the fused numbers appear when one can; nothing is substituted).")
    table.notes += skipped_lines(skipped)
    means = {k: statistics.fmean(v) for k, v in per_seed.items()}
    return SuiteResult(NAME, Section("Accuracy next to speed", [table]), [], skipped,
                       extra={"P": means, "P_per_seed": per_seed})


def _row(preset: str, backend: str, precision: str, runs: list[tuple[dict, float]],
         per_seed: dict[tuple[str, str], list[float]]) -> list:
    """One table row: means over the seeds of one (preset, backend, precision)."""
    def mean(field: str) -> float:
        return statistics.fmean(val[field] for val, _ in runs)

    ps = per_seed[(preset, run_key(backend, precision))]
    p = statistics.fmean(ps)
    eager = per_seed.get((preset, run_key("eager", precision))) if backend != "eager" else None
    fp32 = per_seed.get((preset, backend)) if precision != "fp32" else None
    return [
        preset, backend, precision, len(runs), p,
        statistics.stdev(ps) if len(ps) > 1 else "-", mean("ccc_v"), mean("ccc_a"), mean("loss"),
        p - statistics.fmean(eager) if eager else "-",
        p - statistics.fmean(fp32) if fp32 else "-",
        paired_standard_error(ps, fp32) if fp32 and len(ps) > 1 else "-",
        max(abs(a - b) for a, b in zip(ps, fp32)) if fp32 else "-",
        mean("best_P"), sum(seconds for _, seconds in runs)]


def paired_standard_error(a: list[float], b: list[float]) -> float:
    """Standard error of mean(a - b) over paired seeds: how far the mean difference can sit from 0
    by the trajectories' chance alone (a |P(bf16) - P(fp32)| well inside it is no evidence either way)."""
    return statistics.stdev(x - y for x, y in zip(a, b)) / len(a) ** 0.5
