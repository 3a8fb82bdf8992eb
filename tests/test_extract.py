"""`maven-fast extract`: synth -> tiny encoders -> cache -> Dataset; resume; bad videos; ranks."""
from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from _data_helpers import ramp_frames
from maven_fast.cli import main
from maven_fast.data import DataError, DataWarning, read_transcript
from maven_fast.data import cache_format as cf
from maven_fast.data.dataset import FeatureCacheDataset, collate_segments
from maven_fast.data.extract import extract_features
from maven_fast.data.synth import make_synthetic_dataset, write_mp4
from maven_fast.encoders import EncoderSet, load_encoders

pytestmark = pytest.mark.filterwarnings("ignore::maven_fast.data.report.DataWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    people = make_synthetic_dataset(root, seed=0, videos_per_split=1, frames=36, size=32, test_videos=1)
    return root, {p.name: p for p in people}


@pytest.fixture(scope="module")
def encoders():
    return load_encoders("tiny")


@pytest.fixture(scope="module")
def cache(synth, tmp_path_factory):
    """The cache written by the CLI, as a user would."""
    out = tmp_path_factory.mktemp("cache") / "c"
    assert main(["extract", str(synth[0]), str(out), "--encoders", "tiny", "--no-progress",
                 "--batch-size", "3", "--frame-batch", "16"]) == 0
    return out


def test_synth_then_extract_writes_a_complete_cache(synth, cache, encoders):
    root, people = synth
    index = json.loads((cache / "index.json").read_text())
    assert index["signature"] == encoders.signature()
    assert index["settings"]["mode"] == "contiguous" and index["failed"] == []
    names = {v["name"] for part in index["splits"].values() for v in part["videos"]}
    assert names == {n for n, p in people.items() if p.split != "test"}
    for split, part in index["splits"].items():
        for video in part["videos"]:
            person = people[video["name"]]
            assert video["num_frames"] == person.num_frames and video["fps"] == person.fps
            transcript = read_transcript(next((root / "transcripts").glob(f"{person.video}.*")))
            assert len(video["segments"]) == len(transcript)
            with safe_open(str(cache / video["shard"]), "pt") as f:
                covered = []
                for seg in video["segments"]:
                    k, n = seg["key"], seg["frame_stop"] - seg["frame_start"]
                    frames = f.get_tensor(f"{k}/frames")
                    assert frames.tolist() == list(range(seg["frame_start"] + 1, seg["frame_stop"] + 1))
                    assert f.get_tensor(f"{k}/video").shape == (n, encoders.video.dim)
                    assert f.get_tensor(f"{k}/audio").shape == (seg["num_audio_frames"], encoders.audio.dim)
                    assert seg["num_audio_frames"] > 0
                    assert f.get_tensor(f"{k}/text").shape == (seg["num_text_tokens"], encoders.text.dim)
                    assert f.get_tensor(f"{k}/audio_pooled").shape == (encoders.audio.dim,)
                    assert f.get_tensor(f"{k}/text_pooled").shape == (encoders.text.dim,)
                    labels, mask = f.get_tensor(f"{k}/labels"), f.get_tensor(f"{k}/mask")
                    assert labels.dtype == torch.float32 and labels.shape == (n, 2) and mask.dtype == torch.bool
                    expected = [fr not in person.missing_frames and fr not in person.invalid_frames
                                for fr in frames.tolist()]
                    assert mask.tolist() == expected
                    covered += frames.tolist()
                assert covered == list(range(1, len(covered) + 1))  # contiguous: no gap, no overlap


def test_cached_features_match_running_the_encoders_directly(synth, cache, encoders):
    from maven_fast.data.frames import FrameFolder

    root, _ = synth
    index = json.loads((cache / "index.json").read_text())
    video = index["splits"]["train"]["videos"][0]
    seg = video["segments"][-1]
    images, _ = FrameFolder(root / "cropped_aligned" / video["name"]).read(seg["frame_start"], seg["frame_stop"])
    direct = encoders.video(encoders.video.preprocess(torch.from_numpy(images)))
    tokens, lengths = encoders.text([seg["text"]])
    with safe_open(str(cache / video["shard"]), "pt") as f:
        torch.testing.assert_close(f.get_tensor(f"{seg['key']}/video"), direct, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(f.get_tensor(f"{seg['key']}/text"), tokens[0, : lengths[0]],
                                   atol=1e-5, rtol=1e-5)


def test_dataset_and_collate_pad_and_return_lengths(cache, encoders):
    ds = FeatureCacheDataset(cache, "train", expect_signature=encoders.signature())
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_segments)))
    B = len(batch["names"])
    assert B == min(4, len(ds))
    T = int(batch["video_lengths"].max())
    assert batch["video"].shape == (B, T, encoders.video.dim) and batch["labels"].shape == (B, T, 2)
    for i in range(B):
        n = int(batch["video_lengths"][i])
        item = ds[i]
        torch.testing.assert_close(batch["video"][i, :n], item["video"])
        assert not batch["mask"][i, n:].any() and torch.all(batch["frames"][i, n:] == -1)
        assert torch.equal(batch["mask"][i, :n], item["mask"])
        assert batch["audio"][i, : int(batch["audio_lengths"][i])].shape == item["audio"].shape
        assert int(batch["text_lengths"][i]) == item["text"].shape[0]
    pooled = FeatureCacheDataset(cache, "train", pooled=True)
    pb = collate_segments([pooled[0], pooled[1]])
    assert pb["audio"].shape == (2, encoders.audio.dim) and pb["text"].shape == (2, encoders.text.dim)
    assert pb["audio_lengths"] is None and pb["text_lengths"] is None
    windows = FeatureCacheDataset(cache, "train", max_frames=7)
    frames = sorted((w["name"], f) for w in windows for f in w["frames"].tolist())
    assert frames == sorted((d["name"], f) for d in ds for f in d["frames"].tolist())
    assert max(len(w["frames"]) for w in windows) == 7 and all(w["audio"].shape[0] >= 1 for w in windows)
    with pytest.raises(DataError, match="expected"):
        FeatureCacheDataset(cache, "train", expect_signature={"video": "other"})
    with pytest.raises(DataError, match="no split 'test'"):
        FeatureCacheDataset(cache, "test")


def test_resume_skips_complete_shards_and_redoes_killed_ones(synth, cache, encoders, tmp_path):
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    shards = sorted(work.glob("*/*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    again = extract_features(synth[0], work, encoders, progress=False)
    assert again.written == [] and len(again.skipped) == len(shards) and again.index_path
    assert all(p.stat().st_mtime_ns == stamps[p] for p in shards)
    # A killed run: one shard never renamed (only its partial temp file), one index gone.
    killed, other = shards[0], shards[1]
    original = {k: v.clone() for k, v in _load(killed).items()}
    killed.unlink()
    partial = killed.with_name(killed.name + ".tmp-99999")
    partial.write_bytes(b"\x00" * 100)
    other.write_bytes(other.read_bytes()[:200])  # a damaged file under a final name is redone too
    (work / "index.json").unlink()
    resumed = extract_features(synth[0], work, encoders, progress=False)
    redone = {f"{p.parent.name}/{p.name.removesuffix('.safetensors')}" for p in (killed, other)}
    assert set(resumed.written) == redone and len(resumed.skipped) == len(shards) - 2
    assert not partial.exists() and not list(work.glob("*/*.tmp-*"))
    for key, value in _load(killed).items():
        torch.testing.assert_close(value, original[key])
    assert len(FeatureCacheDataset(work, "val")) == len(FeatureCacheDataset(cache, "val"))


def test_a_video_whose_file_name_is_not_utf8_is_cached_and_indexed(encoders, tmp_path):
    """Undecodable bytes in a name reach Python as surrogates; safetensors opens only UTF-8 paths,
    so the shard was written but never read back: no index, and every run extracted it again.
    And the issues its files raised (their paths hold the surrogates) made the shard's metadata
    unwritable: the video failed with a UnicodeEncodeError (found by fuzzing, 2026-12-04)."""
    from fractions import Fraction

    from _data_helpers import make_mp4
    from maven_fast.data.annotations import write_va_annotations

    root, name = tmp_path / "data", os.fsdecode(b"clip-\xff")
    make_mp4(root / "videos" / f"{name}.mp4", n=30, fps=Fraction(25), size=32, audio_rate=24000)
    (root / "transcripts").mkdir()
    (root / "transcripts" / f"{name}.txt").write_text("[0.0s - 0.6s]: hello\n[0.6s - 1.2s]: there\n")
    ann = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    ann.mkdir(parents=True)
    values = np.zeros((30, 2))
    values[3] = (2.5, 0.1)  # a reported issue naming the annotation file
    write_va_annotations(ann / f"{name}.txt", values)
    kwargs = dict(splits=("train",), progress=False, batch_size=2, frame_batch=16, max_audio_seconds=0.25)
    with pytest.warns(DataWarning, match="outside"):
        result = extract_features(root, tmp_path / "cache", encoders, **kwargs)
    assert result.written == [f"train/{name}"] and result.index_path
    assert [p.name for p in (tmp_path / "cache" / "train").iterdir()] == ["clip-\\xff.safetensors"]
    issues = cf.read_shard_header(tmp_path / "cache" / "train" / "clip-\\xff.safetensors")["issues"]
    assert [i["path"] for i in issues] == [str(ann / f"{name}.txt")] and "outside" in issues[0]["message"]
    ds = FeatureCacheDataset(tmp_path / "cache", "train")
    assert len(ds) == 2 and ds.item(0).name == name and ds[1]
    assert extract_features(root, tmp_path / "cache", encoders, **kwargs).written == []
    with pytest.raises(DataError, match="not UTF-8") as err:
        extract_features(root, tmp_path / name, encoders, **kwargs)
    assert "choose a CACHE_DIR" in str(err.value)


def test_other_encoders_are_detected(synth, cache):
    other = EncoderSet(*(type(e).tiny(seed=1) for e in load_encoders("tiny").__dict__.values()))
    with pytest.raises(DataError, match="built with other encoders or settings"):
        extract_features(synth[0], cache, other, progress=False)
    with pytest.raises(DataError, match="other encoders"):
        extract_features(synth[0], cache, load_encoders("tiny"), mode="exact", progress=False)


def test_bad_videos_are_listed_at_the_end_and_do_not_stop_the_others(synth, encoders, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synth[0], root)
    # 1. A corrupt video file.
    (root / "videos" / "batch1" / "synth_train_00.mp4").write_bytes(b"not a video at all" * 100)
    # 2. A video without an audio track: silence and a warning.
    mute = root / "videos" / "batch2" / "synth_val_00.mp4"
    n = synth[1]["synth_val_00"].num_frames
    from fractions import Fraction
    fps = Fraction(*map(int, synth[1]["synth_val_00"].fps.split("/")))
    mute.unlink()
    write_mp4(mute, ramp_frames(n, 32), fps, None)
    # 3. A transcript longer than its video: cut and reported.
    vtt = next((root / "transcripts").glob("synth_train_pair.*"))
    with open(vtt, "a", encoding="utf-8") as f:
        f.write({".vtt": "\n99:00.000 --> 99:05.000\nway too late\n",
                 ".srt": "\n99\n01:39:00,000 --> 01:39:05,000\nway too late\n",
                 ".txt": "[5940.0s - 5945.0s]: way too late\n",
                 ".tsv": "5940000\t5945000\tway too late\n"}.get(vtt.suffix, ""))
    # 4. An annotation file with a wrong header; 5. a corrupt frame image.
    ann = root / "annotations" / "VA_Estimation_Challenge" / "Validation_Set" / "synth_val_pair_right.txt"
    ann.write_text("arousal;valence\n" + "\n".join(ann.read_text().splitlines()[1:]))
    (root / "cropped_aligned" / "synth_val_pair_left" / "00003.jpg").write_bytes(b"broken jpeg")
    cache = tmp_path / "cache"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["extract", str(root), str(cache), "--encoders", "tiny", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    tail = err[err.index("could not be extracted"):]
    for name, why in [("train/synth_train_00", "synth_train_00.mp4: cannot open as a video"),
                      ("val/synth_val_pair_right", "expected the header line"),
                      ("val/synth_val_pair_left", "00003.jpg: cannot read image")]:
        assert name in tail and why in tail.split(name, 1)[1].splitlines()[0]
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, DataWarning))
    assert "synth_val_00.mp4: has no audio track" in messages
    assert "starts after the video ends" in messages
    index = json.loads((cache / "index.json").read_text())
    assert sorted(f["name"] for f in index["failed"]) == \
        ["synth_train_00", "synth_val_pair_left", "synth_val_pair_right"]
    written = sorted(v["name"] for part in index["splits"].values() for v in part["videos"])
    assert written == ["synth_train_pair_left", "synth_train_pair_right", "synth_val_00"]
    silent = FeatureCacheDataset(cache, "val")[0]
    assert silent["name"] == "synth_val_00" and silent["audio"].shape[0] > 0


def test_ranks_share_the_videos_and_the_last_one_writes_the_index(synth, encoders, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = extract_features(synth[0], cache, encoders, splits=["val"], rank=0, world_size=2,
                             progress=False, dtype=torch.float16, frames_source="video")
    assert first.index_path is None and len(first.written) == 2  # val_00, val_pair_right
    assert not (cache / "index.json").exists()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    second = extract_features(synth[0], cache, encoders, splits=["val"], progress=False,
                              dtype=torch.float16, frames_source="video")
    assert second.written == ["val/synth_val_pair_left"] and second.index_path
    ds = FeatureCacheDataset(cache, "val")
    assert {d["name"] for d in ds} == {"synth_val_00", "synth_val_pair_left", "synth_val_pair_right"}
    assert ds[0]["video"].dtype == torch.float32  # stored as float16, served as float32
    with safe_open(str(cache / "val" / "synth_val_00.safetensors"), "pt") as f:
        assert f.get_tensor("0000/video").dtype == torch.float16
        # Frames decoded from the video file: every frame is present, only labels mask.
        assert f.get_tensor("0000/present").all()
        assert torch.equal(f.get_tensor("0000/mask"), f.get_tensor("0000/label_valid"))


def test_test_split_from_the_organisers_list_to_a_submission(synth, encoders, tmp_path):
    from maven_fast.data import read_frame_list, read_submission, write_submission

    root, people = synth
    frame_list = root / "test_frame_list.txt"
    result = extract_features(root, tmp_path / "cache", encoders, splits=["test"],
                              test_list=frame_list, progress=False)
    assert result.written == ["test/synth_test_00"] and result.index_path
    ds = FeatureCacheDataset(tmp_path / "cache", "test")
    assert all(not item["mask"].any() for item in ds)  # no labels in the test split
    predictions = {}
    for item in ds:  # a stand-in model: predict the frame number
        frames, values = predictions.setdefault(item["name"], ([], []))
        frames += item["frames"].tolist()
        values += [[f / 1000, -f / 1000] for f in item["frames"].tolist()]
    predictions = {k: (np.array(f), np.array(v)) for k, (f, v) in predictions.items()}
    write_submission(tmp_path / "submission.txt", predictions, frame_list)
    back = read_submission(tmp_path / "submission.txt")
    rows = read_frame_list(frame_list)
    assert sum(len(f) for f, _ in back.values()) == len(rows) == people["synth_test_00"].num_frames
    frames, values = back["synth_test_00"]
    last = int(predictions["synth_test_00"][0].max())
    assert last < len(frames)  # frames after the last utterance: the nearest prediction
    np.testing.assert_allclose(values[:, 0], np.minimum(frames, last) / 1000, atol=1e-6)


def _load(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
