"""Accuracy of the encoders at reduced precision (bf16, fp16) against fp32.

1. Features: each encoder on real-shaped inputs (frames decoded from a
   generated video and resized as the pipeline does, 3 s windows of its audio
   track, 12-word sentences), once in fp32 and once per reduced precision
   (``torch.autocast``, as ``--compute-dtype`` runs them). Per encoder: the
   cosine similarity of each output vector (one per frame, audio frame or
   token) to its fp32 counterpart, mean and worst; the relative error
   ``||x - x32|| / ||x32||`` over all outputs; judged against the floor
   :data:`FLOOR_MEAN_COSINE` / :data:`FLOOR_WORST_COSINE`.
2. Downstream: a MAVEN model trained on fp32 features of the synthetic
   dataset, evaluated on its validation split encoded in fp32 and in each
   reduced precision: CCC_v, CCC_a, P and their differences.

Encoders: ``tiny`` or ``base-random`` (the real architectures with random
weights: there are no pretrained weights without the hub, so the numbers are
those of random weights; trained weights have other activation statistics).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch

from maven_fast.benchmark.report import Section, Table
from maven_fast.benchmark.results import SuiteResult

FLOOR_MEAN_COSINE = 0.999
FLOOR_WORST_COSINE = 0.99
SENTENCES = [
    "so today I want to talk about how the week went for me",
    "honestly it was a mixed bag and some days were really great",
    "but then on thursday everything went wrong at the office",
    "I felt calm about it in the end and we just moved on",
    "wow that was the best news I have heard in a long time",
    "I am not sure what to think about all of this yet",
    "it makes me so angry when people do not listen at all",
    "we laughed a lot and the kids were very happy all day",
]


def _cos_stats(ref: torch.Tensor, low: torch.Tensor) -> dict[str, float]:
    a, b = ref.reshape(-1, ref.shape[-1]).double(), low.reshape(-1, low.shape[-1]).double()
    keep = a.norm(dim=1) > 0
    cos = torch.nn.functional.cosine_similarity(a[keep], b[keep], dim=1)
    return {"vectors": int(keep.sum()), "cos_mean": float(cos.mean()), "cos_worst": float(cos.min()),
            "rel_err": float((a - b).norm() / a.norm()), "max_abs": float((a - b).abs().max())}


def real_shaped_inputs(encoders, work: Path, frames: int, audio_windows: int):
    from maven_fast.benchmark.pipeline_suite import write_video
    from maven_fast.data.audio import AudioReader
    from maven_fast.data.media import VideoReader

    seconds = max(frames / 30 + 1, audio_windows * 3 + 1)
    video = write_video(work / "precision.mp4", seconds)
    with VideoReader(video) as reader:
        step = max(1, int(seconds * 30) // frames)
        images = reader.read(0, step * frames)[::step][:frames]
    pixels = encoders.video.preprocess(torch.from_numpy(images.copy()))
    with AudioReader(video, 16000) as audio:
        waves = torch.stack([audio.read(i * 48000, (i + 1) * 48000) for i in range(audio_windows)])
    return pixels, waves, SENTENCES


@torch.no_grad()
def feature_accuracy(encoders, pixels, waves, texts, dtypes=("bfloat16", "float16")) -> list[list[object]]:
    rows = []
    outputs = {}
    for dtype in ("float32", *dtypes):
        encoders.configure(dtype)
        t0 = time.perf_counter()
        video = encoders.video(pixels)
        t_video = time.perf_counter() - t0
        audio, n_audio = encoders.audio(waves)
        tokens, n_tokens = encoders.text(texts)
        valid = torch.arange(tokens.shape[1]) < n_tokens[:, None]
        outputs[dtype] = {"video": video, "audio": audio, "text": tokens[valid]}
        outputs[dtype]["_video_s"] = t_video
    for dtype in dtypes:
        for modality in ("video", "audio", "text"):
            s = _cos_stats(outputs["float32"][modality], outputs[dtype][modality])
            ok = s["cos_mean"] >= FLOOR_MEAN_COSINE and s["cos_worst"] >= FLOOR_WORST_COSINE
            rows.append([getattr(encoders, modality).name, dtype, s["vectors"], f"{s['cos_mean']:.6f}",
                         f"{s['cos_worst']:.6f}", s["rel_err"], s["max_abs"], "met" if ok else "NOT met"])
    encoders.configure("float32")
    return rows


def downstream_accuracy(encoders_kind: str, work: Path, epochs: int, videos_per_split: int, frames: int,
                        dtypes=("bfloat16", "float16"), presets=("reference_mlp", "paper"), log=print):
    """Train on fp32 features, evaluate on validation features made at each precision."""
    from maven_fast.benchmark.accuracy import _train, train_config
    from maven_fast.data import extract_features, make_synthetic_dataset
    from maven_fast.encoders import load_encoders
    from maven_fast.train.api import evaluate_checkpoint

    encoders = load_encoders(encoders_kind)
    make_synthetic_dataset(work / "data", seed=1, videos_per_split=videos_per_split, frames=frames, size=32,
                           test_videos=0)
    caches = {"float32": work / "cache-float32"}
    t0 = time.perf_counter()
    extract_features(work / "data", caches["float32"], encoders, compute_dtype="float32", progress=False)
    log(f"fp32 cache: {time.perf_counter() - t0:.0f} s")
    for dtype in dtypes:
        caches[dtype] = work / f"cache-{dtype}"
        t0 = time.perf_counter()
        extract_features(work / "data", caches[dtype], encoders, splits=("val",), compute_dtype=dtype,
                         progress=False)
        log(f"{dtype} val cache: {time.perf_counter() - t0:.0f} s")
    rows = []
    for preset in presets:
        cfg = train_config(preset, "eager", caches["float32"], encoders.signature(), work / f"run-{preset}", "cpu",
                           epochs, 1e-3, 2, 0)
        _train(cfg)
        ckpt = work / f"run-{preset}" / "checkpoints" / "last"
        ref = evaluate_checkpoint(ckpt, caches["float32"], "val", backend="eager")
        rows.append([preset, "float32", ref["ccc_v"], ref["ccc_a"], ref["P"], "-", "-", "-"])
        for dtype in dtypes:
            with contextlib.redirect_stderr(io.StringIO()), _quiet_warnings():
                got = evaluate_checkpoint(ckpt, caches[dtype], "val", backend="eager",
                                          allow_compute_dtype_mismatch=True)
            rows.append([preset, dtype, got["ccc_v"], got["ccc_a"], got["P"], abs(got["ccc_v"] - ref["ccc_v"]),
                         abs(got["ccc_a"] - ref["ccc_a"]), abs(got["P"] - ref["P"])])
    return rows


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run_precision_accuracy(encoders_kind: str = "tiny", quick: bool = True, log=print,
                           downstream_encoders: str | None = None) -> SuiteResult:
    from maven_fast.encoders import load_encoders
    from maven_fast.encoders.precision import fast_bf16

    frames, windows = (16, 4) if quick else (64, 8)
    with tempfile.TemporaryDirectory(prefix="maven-fast-precision-") as tmp:
        work = Path(tmp)
        encoders = load_encoders(encoders_kind)
        pixels, waves, texts = real_shaped_inputs(encoders, work, frames, windows)
        t0 = time.perf_counter()
        feature_rows = feature_accuracy(encoders, pixels, waves, texts)
        log(f"feature accuracy ({encoders_kind}): {time.perf_counter() - t0:.0f} s")
        down_kind = downstream_encoders or "tiny"
        down_rows = downstream_accuracy(down_kind, work, epochs=30 if quick else 60,
                                        videos_per_split=3, frames=96, log=log)
    features = Table(
        f"Encoder features at reduced precision vs fp32 ({encoders_kind} encoders)",
        ["encoder", "compute dtype", "vectors", "cosine mean", "cosine worst", "relative error", "max abs error",
         f"floor (mean >= {FLOOR_MEAN_COSINE}, worst >= {FLOOR_WORST_COSINE})"], feature_rows,
        notes=[f"inputs: {frames} frames decoded from a generated 320x240 video (resized to 224 as the pipeline "
               f"does), {windows} windows of 3 s of its 16 kHz audio (tone + noise), {len(texts)} 12-word "
               "sentences; one cosine per output vector (frame, 20 ms audio frame, token)",
               "reduced precision = torch.autocast in that dtype (weights fp32, matrix products and convolutions "
               "in the dtype, fp32 accumulation), as --compute-dtype runs the encoders",
               f"bf16 speed on this machine: {fast_bf16('cpu').reason}"])
    downstream = Table(
        f"A trained model on validation features made at each precision ({down_kind} encoders, synthetic data)",
        ["preset", "val features", "CCC_v", "CCC_a", "P", "abs dCCC_v", "abs dCCC_a", "abs dP"], down_rows,
        notes=["model trained (eager, small, dropout off; as the accuracy suite) on fp32 features of the "
               "synthetic dataset (3 videos + 1 two-person video per split, 96 frames); the validation split "
               "re-extracted with the encoders in each precision and evaluated with "
               "maven-fast eval --allow-compute-dtype-mismatch"])
    return SuiteResult("encoder_precision", Section("Encoder precision", [features, downstream]))
