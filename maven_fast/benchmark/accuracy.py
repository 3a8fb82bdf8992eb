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
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
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
    """Trains quietly; restores torch's determinism flag, which the trainer sets."""
    from maven_fast.train.api import train

    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = train(cfg)
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
    return {**result["val"], "best_P": result["progress"]["best_P"]}, time.perf_counter() - t0


def run_accuracy(
    device: str = "cpu",
    presets: tuple[str, ...] = ("reference_mlp", "paper"),
    epochs: int = 30,
    videos_per_split: int = 3,
    frames: int = 96,
    lr: float = 1e-3,
    batch_size: int = 2,
    seed: int = 0,
    precisions: tuple[str, ...] = PRECISIONS,
) -> SuiteResult:
    """Trains eager and every fused backend per preset, in each of ``precisions`` (module docstring);
    the table holds validation P, CCC_v, CCC_a, loss and wall time, P - P(eager) in the same
    precision, and for bf16 P - P(fp32) of the same backend."""
    header = ["preset", "backend", "precision", "val P", "CCC_v", "CCC_a", "val MSE", "P - P(eager)",
              "P - P(fp32)", "best val P", "train s"]
    table = Table(f"Validation P, eager vs fused training, fp32 and bf16 (synthetic data, {device})", header)
    candidates, skipped = fused_candidates(device)
    p_by_run: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="maven-bench-accuracy-") as tmp:
        work = Path(tmp)
        cache, signature = build_cache(work, videos_per_split, frames)
        for preset in presets:
            for precision in precisions:
                for backend in ["eager"] + candidates:
                    key = run_key(backend, precision)
                    cfg = train_config(preset, backend, cache, signature, work / f"{preset}-{key.replace(' ', '-')}",
                                       device, epochs, lr, batch_size, seed, precision)
                    try:
                        val, seconds = _train(cfg)
                    except BackendUnavailable as exc:
                        reason = " ".join(str(exc).split())
                        skipped.append(Skipped(f"{preset}, maven_fast {key}", reason))
                        continue
                    p_by_run[(preset, key)] = val["P"]
                    eager_p = p_by_run.get((preset, run_key("eager", precision)))
                    fp32_p = p_by_run.get((preset, backend))
                    table.rows.append([
                        preset, backend, precision, val["P"], val["ccc_v"], val["ccc_a"], val["loss"],
                        val["P"] - eager_p if backend != "eager" and eager_p is not None else "-",
                        val["P"] - fp32_p if precision != "fp32" and fp32_p is not None else "-",
                        val["best_P"], seconds])
    fused_ran = any(b != "eager" for _, b in p_by_run)
    table.notes = [
        f"Same synthetic data (seed 1, {videos_per_split} videos + 1 two-person video per split, ~{frames} frames, "
        f"tiny encoders), same seed {seed}, same config; only run.backend and run.autocast (none: fp32; bf16: "
        f"the forward under bf16 autocast, fp32 weights and optimizer) differ.",
        f"Model overrides (small, dropout off): {MODEL_OVERRIDES}; optim.lr={lr}, run.batch_size={batch_size}, "
        f"run.epochs={epochs}.",
        f"val P, CCC, MSE: after the last epoch; best val P: the best epoch's. Targets (final P): "
        f"|P - P(eager)| <= {P_TOLERANCE} in each precision; |P(bf16) - P(fp32)| <= {P_TOLERANCE} per backend.",
    ]
    if not fused_ran:
        table.notes.append("No fused backend can train the model in this build: only eager is shown "
                           "(the fused numbers appear when one can; nothing is substituted).")
    table.notes += skipped_lines(skipped)
    return SuiteResult(NAME, Section("Accuracy next to speed", [table]), [], skipped, extra={"P": p_by_run})
