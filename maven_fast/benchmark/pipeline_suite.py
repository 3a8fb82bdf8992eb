"""The pipeline suite: video + audio + transcript to features (extract) and to valence/arousal
(predict) at real encoder size, per stage, fp32 against bf16, with peak memory.

Input: a generated video (default 5 minutes, 30 fps, 320x240 moving pattern,
16 kHz audio track) with a MAVEN transcript (an utterance every 3 s over the
whole video), laid out as an Aff-Wild2-shaped dataset.

Passes, each in its own Python process (so its peak RSS is its own):

* ``decode``: the pipeline's decode thread work alone (PyAV decode, resize to
  224 and normalise; audio decoded and resampled to 16 kHz) over the whole
  video: can decoding keep up with the encoders?
* ``extract`` and ``predict`` per compute dtype, with the ``base-random``
  encoders (Swin-B, HuBERT-base, RoBERTa-base at full size, random weights)
  and an untrained paper-preset MAVEN of full width: wall time, frames/s,
  real-time factor (wall / video seconds processed), seconds per stage
  (decode and preprocess run in the background thread, overlapped with the
  encoders; ``wait`` is the time the encoders waited for decoding), peak RSS.
  Real-size encoders run at a few frames/s on a small CPU, so ``--quick``
  processes only the first ``seconds`` of the video (the transcript is cut
  there: predict then encodes only those frames) and says so.
* ``alone``: the same encoder models timed alone on random inputs of the
  pipeline's batch shapes, under the same precision (``torch.autocast``): the
  rate the pipeline's encoder stages are compared to (median of rounds).
* ``memory``: predict's peak RSS with the tiny encoders on a short and a long
  video (the pipeline's memory must not grow with the video's length).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from maven_fast.benchmark.report import Section, Table
from maven_fast.benchmark.results import SuiteResult

NAME = "pipeline"
FPS = 30
SIZE = (320, 240)
UTTERANCE_SECONDS = 3.0
WORDS = ("so today I want to talk about how the week went and honestly it was a mixed bag some days were "
         "great and some were really frustrating but overall I feel calm about it").split()


# ------------------------------------------------------------------------------ inputs
def write_video(path: Path, seconds: float, fps: int = FPS, size: tuple[int, int] = SIZE) -> Path:
    """An H.264/AAC MP4: a moving colour pattern (so decoding does real work) and a tone with noise."""
    import av

    n = int(round(seconds * fps))
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        audio_stream = container.add_stream("aac", rate=16000)
        audio_stream.layout = "mono"
        for i in range(n):
            image = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        total = int(seconds * 16000)
        for start in range(0, total, 16000):
            t = np.arange(start, min(total, start + 16000)) / 16000
            chunk = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in audio_stream.encode(frame):
                container.mux(packet)
        for packet in audio_stream.encode():
            container.mux(packet)
    return path


def write_transcript(path: Path, seconds: float) -> Path:
    lines = []
    t, k = 0.0, 0
    while t + 0.5 < seconds:
        end = min(seconds, t + UTTERANCE_SECONDS)
        words = [WORDS[(k * 7 + j) % len(WORDS)] for j in range(12)]
        lines.append(f"[{t:.1f}s - {end - 0.2:.1f}s]: {' '.join(words)}\n")
        t, k = end, k + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def make_dataset(root: Path, video_seconds: float, processed_seconds: float) -> dict[str, Path]:
    """Aff-Wild2 layout: the video, a transcript over the first ``processed_seconds``, zero labels."""
    from maven_fast.data.annotations import write_va_annotations

    video = root / "videos" / "bench.mp4"
    if not video.is_file():
        write_video(video, video_seconds)
    transcript = write_transcript(root / "transcripts" / "bench.txt", processed_seconds)
    ann = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    ann.mkdir(parents=True, exist_ok=True)
    write_va_annotations(ann / "bench.txt", np.zeros((int(round(video_seconds * FPS)), 2)))
    return {"root": root, "video": video, "transcript": transcript}


def make_checkpoint(directory: Path, encoders: str, compute_dtype: str) -> Path:
    """An untrained paper-preset MAVEN (full width) saved as a training checkpoint for ``encoders``."""
    from maven_fast.encoders import load_encoders
    from maven_fast.model import MAVEN
    from maven_fast.train.checkpoint import save_checkpoint
    from maven_fast.train.config import TrainConfig

    sig = {"tiny": {"video": ("tiny-swin", 128), "audio": ("tiny-hubert", 32), "text": ("tiny-roberta", 32)},
           "base-random": {"video": ("base-random-swin", 1024), "audio": ("base-random-hubert", 768),
                           "text": ("base-random-roberta", 768)}}[encoders]
    del load_encoders
    overrides = ["model=paper", f"model.encoders.compute_dtype={compute_dtype}"]
    for m, (name, dim) in sig.items():
        overrides += [f"model.encoders.{m}={name}", f"model.encoders.{m}_dim={dim}"]
    cfg = TrainConfig.load(None, overrides)
    torch.manual_seed(0)
    save_checkpoint(directory, MAVEN(cfg.model), None, None, {"step": 0}, config=cfg.to_dict())
    return directory


# ------------------------------------------------------------------------------ passes (child side)
def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pass_decode(args) -> dict:
    from maven_fast.data.audio import AudioReader
    from maven_fast.data.media import VideoReader
    from maven_fast.data.pipeline import StageTimes, _decode
    from maven_fast.encoders import VideoEncoder
    from maven_fast.predict.runner import PredictSettings, video_segments

    video = VideoEncoder.tiny()  # only its preprocess (resize + normalise) runs
    whole = Path(args.work) / "whole.txt"
    write_transcript(whole, args.video_seconds)
    info, _, segments = video_segments(args.video, whole, PredictSettings(tail=True))
    kept = [s for s in segments if s.num_frames > 0]
    times = StageTimes()
    began = time.perf_counter()
    frames = 0
    with VideoReader(args.video, info=info) as reader, AudioReader(args.video, 16000) as audio:
        groups = [kept[i: i + 8] for i in range(0, len(kept), 8)]
        for item in _decode(reader, audio, groups, video, 64, times):
            if item[0] == "frames":
                frames += int(item[2].shape[0])
    wall = time.perf_counter() - began
    return {"frames": frames, "video_seconds": frames / FPS, "wall_s": wall, "stages": times.as_dict()}


def pass_extract(args) -> dict:
    from maven_fast.data.extract import extract_features
    from maven_fast.encoders import load_encoders

    encoders = load_encoders(args.encoders)
    began = time.perf_counter()
    result = extract_features(args.root, Path(args.work) / f"cache-{args.dtype}", encoders, splits=("train",),
                              frames_source="video", progress=False, compute_dtype=args.dtype, device=args.device,
                              overwrite=True, prefetch=args.prefetch, frame_batch=args.frame_batch)
    wall = time.perf_counter() - began
    if result.failed:
        raise RuntimeError(f"extract failed: {result.failed}")
    return {"frames": result.timings.frames, "video_seconds": result.timings.frames / FPS, "wall_s": wall,
            "stages": result.timings.as_dict(), "compute_dtype": result.compute_dtype}


def pass_predict(args) -> dict:
    from maven_fast.data.pipeline import StageTimes
    from maven_fast.predict import Predictor, write_prediction

    ckpt = make_checkpoint(Path(args.work) / f"ckpt-{args.encoders}-{args.dtype}", args.encoders, args.dtype)
    predictor = Predictor.from_checkpoint(ckpt, backend=args.backend, compute_dtype=args.dtype, device=args.device,
                                          allow_random_encoders=True, prefetch=args.prefetch,
                                          frame_batch=args.frame_batch)
    times = StageTimes()
    began = time.perf_counter()
    result = predictor.predict(args.video, args.transcript, timings=times)
    t0 = time.perf_counter()
    write_prediction(result, Path(args.work) / f"pred-{args.dtype}")
    times.add("write", time.perf_counter() - t0)
    wall = time.perf_counter() - began
    return {"frames": times.frames, "video_seconds": times.frames / FPS, "wall_s": wall,
            "stages": times.as_dict(), "compute_dtype": predictor.encoders.compute_dtype,
            "frames_predicted": int(result.covered.sum())}


def pass_alone(args) -> dict:
    """The encoder models alone on random inputs of the pipeline's shapes, at ``args.dtype``."""
    from maven_fast.encoders import load_encoders
    from maven_fast.encoders.precision import autocast_context

    device = torch.device(args.device)
    encoders = load_encoders(args.encoders).to(device)
    encoders.configure(args.dtype)
    rates = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def median_rate(fn, items: int, rounds: int) -> float:
        fn()  # warm-up
        sync()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return items / statistics.median(times)

    with torch.inference_mode():
        pixels = torch.randn(args.frame_batch, 3, 224, 224, device=device).contiguous(
            memory_format=torch.channels_last)
        model = encoders.video.model

        def video_alone():
            with autocast_context(device, args.dtype):
                model(pixels)

        rates["video_frames_per_s"] = median_rate(video_alone, args.frame_batch, args.rounds)
        wave = torch.randn(1, 16000 * 3, device=device) * 0.1

        def audio_alone():
            with autocast_context(device, args.dtype):
                encoders.audio.model(wave)

        rates["audio_seconds_per_s"] = median_rate(audio_alone, 3, args.rounds)
        ids = {k: v.to(device) for k, v in encoders.text.tokenize([" ".join(WORDS[:12])] * 8).items()}

        def text_alone():
            with autocast_context(device, args.dtype):
                encoders.text.model(**ids)

        rates["text_segments_per_s"] = median_rate(text_alone, 8, args.rounds)
    return {"rates": rates}


PASSES = {"decode": pass_decode, "extract": pass_extract, "predict": pass_predict, "alone": pass_alone}


def child_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one pass of the pipeline benchmark (run by the suite)")
    p.add_argument("pass_name", choices=list(PASSES))
    p.add_argument("--json-out", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--root")
    p.add_argument("--video")
    p.add_argument("--transcript")
    p.add_argument("--video-seconds", type=float, default=0.0)
    p.add_argument("--encoders", default="base-random")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prefetch", type=int, default=4)
    p.add_argument("--frame-batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    out = PASSES[args.pass_name](args)
    out.update(peak_rss_mib=_peak_rss_mib(), load_before=load, load_after=os.getloadavg()[0],
               threads=torch.get_num_threads())
    Path(args.json_out).write_text(json.dumps(out))
    return 0


# ------------------------------------------------------------------------------ driver (parent side)
def _run_pass(name: str, work: Path, log, in_process: bool = False, **kw) -> dict:
    out = work / f"{name}-{kw.get('dtype', '')}-{kw.get('encoders', '')}-{len(os.listdir(work))}.json"
    argv = [name, "--json-out", str(out), "--work", str(work)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    log(f"pipeline: {name} {' '.join(f'{k}={v}' for k, v in kw.items() if k in ('dtype', 'encoders'))}")
    began = time.perf_counter()
    if in_process:  # the suite's own test: no process isolation (peak RSS is the test process's)
        child_main(argv)
    else:
        subprocess.run([sys.executable, "-m", "maven_fast.benchmark.pipeline_suite", *argv], check=True)
    data = json.loads(out.read_text())
    data["process_s"] = time.perf_counter() - began
    return data


def measure_memory(work: Path, log, lengths: tuple[float, ...], device: str = "cpu",
                   in_process: bool = False) -> dict[float, dict]:
    """The ``memory`` pass: per video length (seconds), a generated video of that length predicted
    whole with the tiny encoders in fp32, in its own process; ``{seconds: predict pass result}``."""
    memory = {}
    for seconds in lengths:
        mem_root = work / f"mem-{int(seconds)}"
        mem = make_dataset(mem_root, seconds, seconds)
        memory[seconds] = _run_pass("predict", work, log, dtype="float32", encoders="tiny", video=mem["video"],
                                    transcript=mem["transcript"], root=mem_root, device=device,
                                    in_process=in_process)
    return memory


def memory_table(memory: dict[float, dict]) -> Table:
    """Predict's peak RSS per video length (the ``memory`` pass)."""
    rows = [[f"{s / 60:.0f} min", r["frames"], round(r["wall_s"], 1), round(r["peak_rss_mib"])]
            for s, r in sorted(memory.items())]
    return Table("Predict's peak RSS against video length (tiny encoders, fp32)",
                 ["video", "frames", "wall s", "peak RSS MiB"], rows)


def run_pipeline(device: str, quick: bool, log=print, work_dir: str | None = None,
                 dtypes: tuple[str, ...] = ("float32", "bfloat16"), encoders: str = "base-random",
                 video_seconds: float = 300.0, processed: float | None = None,
                 memory_lengths: tuple[float, ...] | None = None, in_process: bool = False) -> SuiteResult:
    """Runs every pass (see the module docstring) and returns the report section. The keyword
    arguments after ``dtypes`` exist for the suite's own test (tiny encoders, a short video)."""
    from maven_fast.encoders.precision import fast_bf16

    if device != "cpu" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available here")
    if processed is None:
        processed = 1.0 if quick else video_seconds
    frame_batch = 8 if quick else 64
    if memory_lengths is None:
        memory_lengths = (60.0, 300.0) if quick else (300.0, 1200.0)
    tmp = tempfile.TemporaryDirectory(prefix="maven-fast-pipeline-") if work_dir is None else None
    work = Path(work_dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        data = make_dataset(work / "data", video_seconds, processed)
        generate_s = time.perf_counter() - t0
        common = {"root": data["root"], "video": data["video"], "transcript": data["transcript"]}
        dev = {"device": device, "in_process": in_process}
        results: dict[str, dict] = {"decode": _run_pass("decode", work, log, in_process, video=data["video"],
                                                        video_seconds=video_seconds)}
        for dtype in dtypes:
            results[f"alone-{dtype}"] = _run_pass("alone", work, log, dtype=dtype, encoders=encoders,
                                                  rounds=2 if quick else 5, frame_batch=frame_batch, **dev)
            results[f"extract-{dtype}"] = _run_pass("extract", work, log, dtype=dtype, encoders=encoders,
                                                    frame_batch=frame_batch, **common, **dev)
            results[f"predict-{dtype}"] = _run_pass("predict", work, log, dtype=dtype, encoders=encoders,
                                                    frame_batch=frame_batch, **common, **dev)
        memory = measure_memory(work, log, memory_lengths, **dev)
    finally:
        if tmp is not None:
            tmp.cleanup()
    hw = fast_bf16(device)
    section = _section(results, memory, quick, processed, video_seconds, generate_s, hw.reason, frame_batch,
                       encoders)
    return SuiteResult(NAME, section, extra={"results": results, "memory": {str(k): v for k, v in memory.items()}})


STAGE_ORDER = ("decode", "preprocess", "wait", "video_encoder", "audio_encoder", "text_encoder", "model", "write")


def _section(results, memory, quick, processed, video_seconds, generate_s, bf16_reason, frame_batch,
             encoders="base-random") -> Section:
    notes = [
        f"input: a generated {video_seconds / 60:.0f}-minute video, {FPS} fps, {SIZE[0]}x{SIZE[1]} H.264 + 16 kHz "
        f"AAC, a MAVEN transcript with an utterance every {UTTERANCE_SECONDS:g} s (generated in {generate_s:.0f} s)",
        (f"{'--quick' if quick else f'--pipeline-seconds {processed:g}'}: extract and predict process the first "
         f"{processed:g} s only (the transcript ends there: the frames column says how many frames that is); "
         "decode runs over the whole video") if processed < video_seconds else
        "extract and predict process the whole video",
        (f"encoders: {encoders}; " if encoders != "base-random" else
         "encoders: base-random (Swin-B, HuBERT-base, RoBERTa-base at full size, random weights: throughput only); ")
        + "model: untrained paper-preset MAVEN of full width; one process per pass (peak RSS is that process's); "
        f"--frame-batch {frame_batch}, --batch-size 8, --prefetch 4",
        f"bf16 on this machine: {bf16_reason}",
        "stage seconds: decode and preprocess run in the background decode thread, overlapped with the encoders, "
        "so stages do not add up to the wall time; 'wait' is the time the encoders waited for decoding",
        "real-time factor (RTF) = wall seconds / seconds of video processed (< 1: faster than real time)",
    ]
    rows = []
    dec = results["decode"]
    rows.append(["decode only", "-", dec["frames"], round(dec["wall_s"], 1), dec["frames"] / dec["wall_s"],
                 dec["wall_s"] / dec["video_seconds"], round(dec["peak_rss_mib"])] +
                [round(dec["stages"].get(s, 0.0), 2) if s in dec["stages"] else "" for s in STAGE_ORDER] +
                [f"{dec['load_before']:.1f}/{dec['load_after']:.1f}"])
    for key, r in results.items():
        if not key.startswith(("extract", "predict")):
            continue
        kind, dtype = key.split("-", 1)
        rows.append([kind, r.get("compute_dtype", dtype), r["frames"], round(r["wall_s"], 1),
                     r["frames"] / r["wall_s"], r["wall_s"] / r["video_seconds"], round(r["peak_rss_mib"])] +
                    [round(r["stages"].get(s, 0.0), 2) if s in r["stages"] else "" for s in STAGE_ORDER] +
                    [f"{r['load_before']:.1f}/{r['load_after']:.1f}"])
    passes = Table("Extract and predict, per stage", ["pass", "compute dtype", "frames", "wall s", "frames/s",
                                                      "RTF", "peak RSS MiB"] + [f"{s} s" for s in STAGE_ORDER] +
                   ["load 1-min before/after"], rows)
    enc_rows = []
    for key, r in results.items():
        if not key.startswith(("extract", "predict")):
            continue
        kind, dtype = key.split("-", 1)
        alone = results.get(f"alone-{dtype}", {}).get("rates", {})
        stage_rate = r["frames"] / r["stages"]["video_encoder"] if r["stages"].get("video_encoder") else float("nan")
        end_to_end = r["frames"] / r["wall_s"]
        model_rate = alone.get("video_frames_per_s", float("nan"))
        enc_rows.append([kind, dtype, model_rate, stage_rate, stage_rate / model_rate, end_to_end,
                         end_to_end / model_rate])
    encoder = Table("Video encoder: pipeline vs the same timm model alone",
                    ["pass", "compute dtype", "model alone frames/s", "pipeline video-encoder stage frames/s",
                     "stage / alone", "pipeline end-to-end frames/s", "end-to-end / alone"], enc_rows,
                    notes=[f"'alone': Swin-B on random [{frame_batch}, 3, 224, 224] channels_last inputs under "
                           "the same autocast, median of rounds after a warm-up; the stage rate is frames / seconds in "
                           "the video encoder inside the pipeline"])
    alone_rows = [[key.split("-", 1)[1], r["rates"]["video_frames_per_s"], r["rates"]["audio_seconds_per_s"],
                   r["rates"]["text_segments_per_s"], round(r["peak_rss_mib"])]
                  for key, r in results.items() if key.startswith("alone")]
    alone = Table("Encoder models alone", ["compute dtype", "Swin-B frames/s", "HuBERT-base audio s/s",
                                           "RoBERTa-base segments/s (12 words)", "peak RSS MiB"], alone_rows)
    speed = []
    f32, b16 = results.get("extract-float32"), results.get("extract-bfloat16")
    if f32 and b16:
        speed.append(["extract end-to-end bf16 / fp32", (b16["frames"] / b16["wall_s"]) /
                      (f32["frames"] / f32["wall_s"]), ">= 2 (issue target, on a bf16 CPU)"])
    if len(memory) == 2:
        (s1, r1), (s2, r2) = sorted(memory.items())
        speed.append([f"predict peak RSS {s2 / 60:.0f} min / {s1 / 60:.0f} min (tiny encoders)",
                      r2["peak_rss_mib"] / r1["peak_rss_mib"], "<= 1.10"])
    mem = memory_table(memory)
    ratios = Table("Ratios", ["what", "value", "target"], speed)
    return Section("Pipeline: video to features and to valence/arousal", [passes, encoder, alone, ratios, mem],
                   notes=notes)


if __name__ == "__main__":
    sys.exit(child_main())
