"""`maven-fast predict`: CSV/PNG outputs, features equal to extract's cache, refusals and bad inputs.

One tiny clip (66 frames at 30000/1001 fps, 24 kHz audio, three utterances)
is laid out as an Aff-Wild2-shaped dataset and extracted with tiny encoders;
checkpoints are untrained small models saved through the training
checkpoint writer with a TrainConfig whose encoders match the cache.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from _data_helpers import make_mp4
from maven_fast.cli import main
from maven_fast.config import EncoderConfig
from maven_fast.data import DataWarning, FeatureCacheDataset, extract_features, probe_video
from maven_fast.data.annotations import write_va_annotations
from maven_fast.encoders import AudioEncoder, VideoEncoder, load_encoders
from maven_fast.model import MAVEN
from maven_fast.predict import (FRAME_COLUMNS, SEGMENT_COLUMNS, EncoderMismatch, NoCheckpoint, Predictor,
                                PredictSettings, encode_segments, encoders_for, predict_video)
from maven_fast.predict.runner import video_segments
from maven_fast.train.checkpoint import save_checkpoint
from maven_fast.train.config import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::maven_fast.data.report.DataWarning")

FPS = Fraction(30000, 1001)
FRAMES = 66
UTTERANCES = [(0.3, 0.8, "I was really happy"), (0.9, 1.4, "then calm"), (1.5, 1.9, "wow great")]
EXTRACT = {"tail": True, "max_audio_seconds": 0.25, "batch_size": 2, "frame_batch": 16}
TINY = {"video": {"name": "tiny-swin", "dim": 128}, "audio": {"name": "tiny-hubert", "dim": 32},
        "text": {"name": "tiny-roberta", "dim": 32}}
SMALL = {"paper": ["model.cross_modal.embed_dim=32", "model.beit.hidden_size=32", "model.beit.num_attention_heads=2",
                   "model.beit.intermediate_size=64", "model.regressor.hidden_sizes=[32,16]"],
         "reference_mlp": ["model.cross_modal.embed_dim=32", "model.regressor.hidden_sizes=[32,16]"]}


def maven_transcript(path: Path, utterances) -> Path:
    path.write_text("".join(f"[{a}s - {b}s]: {t}\n" for a, b, t in utterances), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def encoders():
    return load_encoders("tiny")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict[str, Path]:
    """An Aff-Wild2-shaped dataset holding one annotated clip."""
    root = tmp_path_factory.mktemp("clip")
    video = make_mp4(root / "videos" / "clip.mp4", n=FRAMES, fps=FPS, size=32, audio_rate=24000)
    (root / "transcripts").mkdir()
    transcript = maven_transcript(root / "transcripts" / "clip.txt", UTTERANCES)
    ann = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    ann.mkdir(parents=True)
    write_va_annotations(ann / "clip.txt", np.zeros((FRAMES, 2)))
    return {"root": root, "video": video, "transcript": transcript}


@pytest.fixture(scope="module")
def cache(clip, encoders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "cache"
    result = extract_features(clip["root"], out, encoders, splits=("train",), frames_source="video",
                              progress=False, **EXTRACT)
    assert result.written == ["train/clip"] and not result.failed
    return out


def make_checkpoint(directory: Path, cache: Path | None, preset: str = "paper", *extra: str,
                    signature: dict | None = None) -> Path:
    """An untrained small model saved as a training checkpoint whose config names ``signature``."""
    signature = signature or TINY
    overrides = [f"model.encoders.{m}={s['name']}" for m, s in signature.items()]
    overrides += [f"model.encoders.{m}_dim={s['dim']}" for m, s in signature.items()]
    overrides += [f"data.cache={cache}"] if cache is not None else []
    cfg = TrainConfig.load(None, [f"model={preset}", *overrides, *SMALL[preset], *extra])
    torch.manual_seed(1)
    save_checkpoint(directory, MAVEN(cfg.model), None, None, {"step": 0}, config=cfg.to_dict())
    return directory


@pytest.fixture(scope="module")
def checkpoint(cache, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "best", cache)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def predict_cli(*args: str) -> int:
    return main(["predict", *map(str, args), "--backend", "eager", "--no-progress"])


# ------------------------------------------------------------------------------------------ outputs
def test_cli_writes_segment_and_frame_csvs_and_a_png(clip, checkpoint, tmp_path):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a clean clip reports nothing
        assert predict_cli(clip["video"], "--transcript", clip["transcript"], "--checkpoint", checkpoint,
                           "--out", out, "--plot") == 0
    columns, frames = read_csv(out / "clip.frames.csv")
    assert tuple(columns) == FRAME_COLUMNS
    assert len(frames) == probe_video(clip["video"]).num_frames == FRAMES
    assert [int(r["frame"]) for r in frames] == list(range(1, FRAMES + 1))
    assert all(r["file"] == "clip.mp4" for r in frames)
    np.testing.assert_allclose([float(r["time_s"]) for r in frames], np.arange(FRAMES) / float(FPS), atol=1e-6)
    values = np.array([[float(r["valence"]), float(r["arousal"])] for r in frames])  # tail: every frame
    assert np.isfinite(values).all() and np.abs(values).max() <= math.sqrt(2) and values.std(0).min() > 0

    columns, segments = read_csv(out / "clip.segments.csv")
    assert tuple(columns) == SEGMENT_COLUMNS
    ends = [b for _, b, _ in UTTERANCES]
    expected = list(zip([0.0, *ends], [*ends, FRAMES / float(FPS)]))  # contiguous, plus the cache's tail
    spans = [float(r[k]) for r in segments for k in ("start_s", "end_s")]
    assert spans == pytest.approx([t for span in expected for t in span], abs=1e-6)
    assert [r["text"] for r in segments] == [t for _, _, t in UTTERANCES] + [""]
    times = np.arange(FRAMES) / float(FPS)
    for row, (start, end) in zip(segments, expected):
        inside = (times >= start - 1e-9) & (times < end - 1e-9)
        assert inside.any()
        assert float(row["valence"]) == pytest.approx(values[inside, 0].mean(), abs=1e-5)
        assert float(row["arousal"]) == pytest.approx(values[inside, 1].mean(), abs=1e-5)

    png = (out / "clip.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out / "clip.png") as image:
        image.verify()
        assert image.size[0] > 200 and image.size[1] > 100
    report = json.loads((out / "predict_report.json").read_text())
    assert report["videos"][0]["status"] == "ok" and report["videos"][0]["frames"] == FRAMES
    assert report["settings"]["tail"] is True and report["settings"]["max_audio_seconds"] == 0.25


def test_exact_mode_without_tail_leaves_frames_outside_utterances_empty(clip, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert predict_cli(clip["video"], "--transcript", clip["transcript"], "--checkpoint", checkpoint,
                       "--out", out, "--mode", "exact", "--no-tail") == 0
    _, segments = read_csv(out / "clip.segments.csv")
    assert [(float(r["start_s"]), float(r["end_s"]), r["text"]) for r in segments] == UTTERANCES
    _, frames = read_csv(out / "clip.frames.csv")
    assert len(frames) == FRAMES
    times = np.arange(FRAMES) / float(FPS)
    spoken = np.zeros(FRAMES, bool)
    for start, end, _ in UTTERANCES:
        spoken |= (times >= start - 1e-9) & (times < end - 1e-9)
    assert 0 < spoken.sum() < FRAMES
    assert [r["valence"] != "" and r["arousal"] != "" for r in frames] == spoken.tolist()


# ------------------------------------------------------------------------- equality with extract
def test_segment_features_equal_the_extract_cache(clip, cache, encoders):
    from maven_fast.data.audio import AudioReader
    from maven_fast.data.media import VideoReader

    settings = PredictSettings(mode="contiguous", **EXTRACT)
    _, _, segments = video_segments(clip["video"], clip["transcript"], settings, 16000)
    index = json.loads((cache / "index.json").read_text())
    video = index["splits"]["train"]["videos"][0]
    assert [{k: s[k] for k in ("index", "start", "end", "text", "frame_start", "frame_stop", "sample_start",
                               "sample_stop", "kind")} for s in video["segments"]] == \
        [{k: getattr(s, k) for k in ("index", "start", "end", "text", "frame_start", "frame_stop",
                                     "sample_start", "sample_stop", "kind")} for s in segments]
    assert len(segments) == 4 and segments[-1].kind == "tail"
    with VideoReader(clip["video"]) as frames, AudioReader(clip["video"], 16000) as audio:
        groups = list(encode_segments(frames, audio, segments, encoders, batch_size=2, frame_batch=16,
                                      max_audio_seconds=EXTRACT["max_audio_seconds"]))
    assert [len(g) for g in groups] == [2, 2]
    features = [f for g in groups for f in g]
    assert max(f.audio.shape[0] for f in features) > 0.25 * 50  # several audio windows were joined
    with safe_open(str(cache / video["shard"]), "pt") as shard:
        for feats in features:
            key = f"{feats.segment.index:04d}"
            for name in ("video", "audio", "audio_pooled", "text", "text_pooled"):
                cached = shard.get_tensor(f"{key}/{name}")
                assert torch.equal(getattr(feats, name), cached), f"segment {key}: {name} differs from the cache"


@pytest.mark.parametrize("preset, max_frames", [("paper", 0), ("paper", 7), ("reference_mlp", 0)])
def test_predictions_equal_the_model_on_cached_features(clip, cache, tmp_path, preset, max_frames):
    ckpt = make_checkpoint(tmp_path / "ckpt", cache, preset, f"data.max_frames={max_frames}")
    predictor = Predictor.from_checkpoint(ckpt, backend="eager", device="cpu", batch_size=2, frame_batch=16)
    assert (predictor.settings.tail, predictor.settings.max_frames) == (True, max_frames)  # from the run
    result = predictor.predict(clip["video"], clip["transcript"])
    dataset = FeatureCacheDataset(cache, "train", pooled=preset != "paper", max_frames=max_frames or None)
    seen = np.zeros(FRAMES, bool)
    with torch.no_grad():
        for item in dataset:
            out = predictor.model(item["video"][None], item["audio"][None], item["text"][None]).valence_arousal[0]
            rows = item["frames"].numpy() - 1
            np.testing.assert_allclose(result.valence[rows], out[:, 0].numpy(), rtol=0, atol=1e-6)
            np.testing.assert_allclose(result.arousal[rows], out[:, 1].numpy(), rtol=0, atol=1e-6)
            seen[rows] = True
    assert seen.all() and len(dataset) > (4 if max_frames else 3)


def test_default_backend_predicts_what_eager_predicts(clip, cache, tmp_path):
    """`maven-fast predict` without --backend (auto: the fused C++ kernels on a CPU, the
    CUDA or Triton kernels on a GPU, cuda being the default device there) writes the
    per-frame and per-segment predictions of the eager model."""
    ckpt = make_checkpoint(tmp_path / "ckpt", cache, "paper")
    predictor = Predictor.from_checkpoint(ckpt)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert predictor.model.backend != "eager" and next(predictor.model.parameters()).device.type == device
    base = [clip["video"], "--transcript", clip["transcript"], "--checkpoint", ckpt, "--no-progress"]
    assert main(["predict", *map(str, base), "--out", str(tmp_path / "eager"), "--backend", "eager"]) == 0
    assert main(["predict", *map(str, base), "--out", str(tmp_path / "default")]) == 0
    for name in ("clip.frames.csv", "clip.segments.csv"):
        _, eager = read_csv(tmp_path / "eager" / name)
        _, fused = read_csv(tmp_path / "default" / name)
        assert len(eager) == len(fused) > 0
        for e, f in zip(eager, fused):
            assert {k: v for k, v in e.items() if k not in ("valence", "arousal")} == \
                {k: v for k, v in f.items() if k not in ("valence", "arousal")}
            for k in ("valence", "arousal"):
                assert float(f[k]) == pytest.approx(float(e[k]), abs=2e-5), (name, k, e, f)


# ------------------------------------------------------------------------------- refusals, errors
def test_refuses_to_predict_without_a_checkpoint(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict_cli(clip["video"], "--transcript", clip["transcript"], "--out", out) == 2
    err = capsys.readouterr().err
    assert "no checkpoint given" in err and "random weights" in err and "--checkpoint" in err
    assert not out.exists()
    with pytest.raises(NoCheckpoint, match="refuses to run a model with random weights"):
        Predictor.from_checkpoint(None)


def test_transcript_count_must_be_one_per_video_or_one_for_all(clip, checkpoint, tmp_path, capsys):
    t = clip["transcript"]
    assert predict_cli(clip["video"], clip["video"], "--transcript", t, "--transcript", t, "--transcript", t,
                       "--checkpoint", checkpoint, "--out", tmp_path) == 2
    assert "2 video(s) but 3 transcript(s)" in capsys.readouterr().err
    assert predict_cli(clip["video"], "--checkpoint", checkpoint, "--out", tmp_path) == 2
    assert "1 video(s) but 0 transcript(s)" in capsys.readouterr().err


def test_encoders_that_do_not_match_the_checkpoint_are_a_clear_error(clip, cache, tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base", None, signature=EncoderConfig().signature())
    assert predict_cli(clip["video"], "--transcript", clip["transcript"], "--checkpoint", base,
                       "--encoders", "tiny", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "expects the video encoder 'swin_base_patch4_window7_224' (1024-d)" in err and "--encoders auto" in err
    tiny = TINY
    with pytest.raises(EncoderMismatch, match="expects the video encoder 'tiny-swin' .* --encoders base loads"):
        encoders_for(EncoderConfig.from_signature(tiny), "base")
    narrow = {**tiny, "video": {"name": "tiny-swin", "dim": 64}}
    with pytest.raises(EncoderMismatch, match="trained on 64-d video features from 'tiny-swin'.* outputs 128-d"):
        encoders_for(EncoderConfig.from_signature(narrow))
    seeded = {**tiny, "video": {"name": "tiny-swin-seed2", "dim": 128}}
    built = encoders_for(EncoderConfig.from_signature(seeded), "tiny")
    assert built.signature() == seeded
    expected = VideoEncoder.tiny(seed=2).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in built.video.state_dict().items())
    local = tmp_path / "hubert"
    AudioEncoder.tiny().save_pretrained(str(local))
    with pytest.warns(UserWarning, match="trained with 'tiny-hubert': make sure they hold the same weights"):
        assert encoders_for(EncoderConfig.from_signature(tiny), audio=str(local)).audio.dim == 32


# ------------------------------------------------------------------------------------ bad inputs
def test_a_video_without_audio_is_predicted_with_a_warning(clip, checkpoint, tmp_path):
    mute = make_mp4(tmp_path / "mute.mp4", n=40, fps=Fraction(25), size=32, audio_rate=None)
    predictor = Predictor.from_checkpoint(checkpoint, backend="eager", device="cpu")
    with pytest.warns(DataWarning, match="mute.mp4: has no audio track"):
        result = predict_video(mute, clip["transcript"], predictor.model, predictor.encoders, predictor.settings,
                               mode="exact")
    assert result.num_frames == 40 and result.fps == 25
    assert any("has no audio track" in line for line in result.report.lines())
    times = np.arange(40) / 25
    spoken = np.zeros(40, bool)
    for start, end, _ in UTTERANCES:
        spoken |= (times >= start - 1e-9) & (times < end - 1e-9)
    assert result.covered.tolist() == spoken.tolist()
    assert np.isfinite([s.valence for s in result.segments]).all()


def test_a_corrupt_video_is_listed_and_the_others_still_processed(clip, checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "out"
    assert predict_cli(bad, clip["video"], "--transcript", clip["transcript"], "--checkpoint", checkpoint,
                       "--out", out) == 1
    err = capsys.readouterr().err
    listed = err[err.index("could not be predicted"):]
    assert f"{bad}: {bad}: cannot open as a video" in listed
    assert (out / "clip.segments.csv").is_file() and (out / "clip.frames.csv").is_file()
    assert not (out / "broken.segments.csv").exists()
    report = {v["video"]: v for v in json.loads((out / "predict_report.json").read_text())["videos"]}
    assert report[str(bad)]["status"] == "failed" and report[str(clip["video"])]["status"] == "ok"


def test_a_video_whose_file_name_is_not_utf8(clip, checkpoint, tmp_path, monkeypatch):
    """Linux file names are bytes; undecodable ones reach Python as surrogates (\\udcff), which
    have no UTF-8 form: writing the CSVs, the report and the printed paths crashed."""
    video = tmp_path / os.fsdecode(b"clip-\xff.mp4")
    shutil.copy(clip["video"], video)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")  # a pipe, a strict locale
    monkeypatch.setattr(sys, "stdout", stdout)
    out = tmp_path / "out"
    assert predict_cli(video, "--transcript", clip["transcript"], "--checkpoint", checkpoint, "--out", out,
                       "--plot") == 0
    stdout.flush()
    assert b"clip-\\udcff.segments.csv" in stdout.buffer.getvalue()
    assert sorted(os.listdir(os.fsencode(out))) == [b"clip-\xff.frames.csv", b"clip-\xff.png",
                                                    b"clip-\xff.segments.csv", b"predict_report.json"]
    columns, segments = read_csv(out / os.fsdecode(b"clip-\xff.segments.csv"))
    assert {r["file"] for r in segments} == {"clip-\\udcff.mp4"} and len(segments) == 4
    report = json.loads((out / "predict_report.json").read_text(encoding="utf-8"))
    assert report["videos"][0]["video"] == str(video) and report["videos"][0]["status"] == "ok"


def test_a_transcript_longer_than_the_video_is_reported(clip, checkpoint, tmp_path):
    long = maven_transcript(tmp_path / "long.txt", [*UTTERANCES, (2.0, 3.5, "runs past the end"),
                                                    (40.0, 41.0, "way too late")])
    out = tmp_path / "out"
    with pytest.warns(DataWarning) as caught:
        assert predict_cli(clip["video"], "--transcript", long, "--checkpoint", checkpoint, "--out", out) == 0
    messages = " ".join(str(w.message) for w in caught)
    assert "starts after the video ends" in messages and "runs past the video end" in messages
    issues = json.loads((out / "predict_report.json").read_text())["videos"][0]["issues"]
    assert any("long.txt:5: utterance [40s - 41s] starts after the video ends" in i for i in issues)
    _, segments = read_csv(out / "clip.segments.csv")
    assert len(segments) == 4 and float(segments[-1]["end_s"]) == pytest.approx(FRAMES / float(FPS), abs=1e-6)


def test_two_videos_with_one_name_would_overwrite_each_other(clip, checkpoint, tmp_path, capsys):
    other = make_mp4(tmp_path / "clip.mp4", n=40, fps=Fraction(25), size=32)
    assert predict_cli(clip["video"], other, "--transcript", clip["transcript"], "--checkpoint", checkpoint,
                       "--out", tmp_path / "out") == 2
    assert "share the name 'clip'" in capsys.readouterr().err
