"""`maven-fast synth`: an Aff-Wild2-shaped dataset whose labels are carried by the signals."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from maven_fast.cli import main
from maven_fast.data import DataWarning, read_transcript, read_va_annotations
from maven_fast.data.affwild2 import build_split
from maven_fast.data.audio import AudioReader
from maven_fast.data.frames import FrameFolder
from maven_fast.data.media import probe_video
from maven_fast.data.synth import CALM, EXCITED, NEGATIVE, POSITIVE, make_synthetic_dataset

SMALL = dict(videos_per_split=2, frames=90, size=32, test_videos=1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    people = make_synthetic_dataset(root, seed=3, **SMALL)
    return root, people


def test_layout_is_aff_wild2_shaped(synth):
    root, people = synth
    names = {p.name for p in people}
    assert {"synth_train_pair_left", "synth_train_pair_right", "synth_val_pair_left"} <= names
    assert (root / "videos" / "batch1" / "synth_train_00.mp4").is_file()
    assert (root / "videos" / "test" / "synth_test_00.mp4").is_file()
    ann = root / "annotations" / "VA_Estimation_Challenge"
    assert sorted(p.stem for p in (ann / "Train_Set").iterdir()) == \
        ["synth_train_00", "synth_train_01", "synth_train_pair_left", "synth_train_pair_right"]
    formats = {read_transcript(p).format for p in (root / "transcripts").iterdir()}
    assert len(formats) >= 4
    info = json.loads((root / "synth_info.json").read_text())
    assert info["seed"] == 3 and len(info["people"]) == len(people)
    assert (root / "test_frame_list.txt").read_text().startswith("image_location,valence,arousal\n")


def test_real_mp4_with_aac_audio_and_declared_frame_counts(synth):
    root, people = synth
    for p in people:
        info = probe_video(next((root / "videos").rglob(f"{p.video}.mp4")))
        assert info.num_frames == p.num_frames and info.has_audio
        assert f"{info.fps.numerator}/{info.fps.denominator}" == p.fps
    assert {p.fps for p in people} == {"30/1", "30000/1001"}


def test_missing_images_and_minus_five_lines_are_where_the_info_says(synth):
    root, people = synth
    for p in people:
        folder = FrameFolder(root / "cropped_aligned" / p.name)
        present = folder.present(0, p.num_frames)
        assert sorted((np.flatnonzero(~present) + 1).tolist()) == p.missing_frames
        assert p.missing_frames  # every person has some
        if p.split == "test":
            continue
        split_dir = "Train_Set" if p.split == "train" else "Validation_Set"
        values, valid = read_va_annotations(root / "annotations" / "VA_Estimation_Challenge" /
                                            split_dir / f"{p.name}.txt")
        assert len(valid) == p.num_frames
        assert (np.flatnonzero(~valid.numpy()) + 1).tolist() == p.invalid_frames


def test_deterministic_from_the_seed(synth, tmp_path):
    root, _ = synth
    again = tmp_path / "again"
    make_synthetic_dataset(again, seed=3, **SMALL)
    for rel in ["annotations/VA_Estimation_Challenge/Train_Set/synth_train_00.txt",
                "transcripts/synth_train_01.srt", "cropped_aligned/synth_val_00/00010.jpg",
                "videos/batch1/synth_train_00.mp4", "synth_info.json"]:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    make_synthetic_dataset(other, seed=4, videos_per_split=1, frames=60, size=32, test_videos=0)
    rel = "annotations/VA_Estimation_Challenge/Train_Set/synth_train_00.txt"
    assert (root / rel).read_bytes() != (other / rel).read_bytes()


def test_labels_are_carried_by_the_signals(synth):
    """Face colour follows valence, tone loudness follows arousal, words follow both."""
    root, people = synth
    yellow, valence, loudness, arousal, word_agreement = [], [], [], [], []
    for split_name in ("train", "val"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            split = build_split(root, split_name)
        for entry in split:
            values, valid = entry.labels()
            images, present = FrameFolder(entry.frames_dir).read(0, entry.num_frames)
            keep = valid.numpy() & present
            cheek = images[:, 12:20, 8:12].astype(float).mean(axis=(1, 2))  # the face colour
            yellow += list((cheek[:, 0] - cheek[:, 2])[keep])
            valence += list(values[:, 0].numpy()[keep])
            if entry.name.endswith("_right"):
                continue  # the pair's audio and words follow the left person
            with AudioReader(entry.audio_path) as audio:
                for seg in split.segments[entry.name]:
                    for a in range(seg.frame_start, seg.frame_stop - 5, 6):  # 0.2 s windows
                        if valid[a:a + 6].any():
                            t0 = a / float(entry.fps)
                            wave = audio.read(int(t0 * 16000), int((t0 + 0.2) * 16000))
                            loudness.append(float(wave.pow(2).mean().sqrt()))
                            arousal.append(float(values[a:a + 6, 1][valid[a:a + 6]].mean()))
                    seg_valid = valid[seg.frame_start:seg.frame_stop]
                    if not seg_valid.any():
                        continue
                    mean_va = values[seg.frame_start:seg.frame_stop][seg_valid].mean(dim=0)
                    words = seg.text.split()
                    for score, target in [(sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words), mean_va[0]),
                                          (sum(w in EXCITED for w in words) - sum(w in CALM for w in words), mean_va[1])]:
                        if score != 0 and abs(float(target)) > 0.15:
                            word_agreement.append(np.sign(score) == np.sign(float(target)))
    assert np.corrcoef(yellow, valence)[0, 1] > 0.95
    assert len(loudness) > 40 and np.corrcoef(loudness, arousal)[0, 1] > 0.6
    assert len(word_agreement) >= 8 and np.mean(word_agreement) >= 0.9


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--videos-per-split", "1", "--frames", "40", "--size", "32",
                 "--test-videos", "0", "--seed", "1"]) == 0
    assert "wrote 6 annotated people (3 train, 3 val)" in capsys.readouterr().out
    assert main(["synth", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--size", "33"]) == 2
