"""Aff-Wild2: annotation files, _left/_right, label alignment, split index, ABAW submission."""
from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from _data_helpers import make_mp4
from maven_fast.data import DataError, DataWarning, Report, read_va_annotations
from maven_fast.data.affwild2 import AffWild2Layout, build_split, video_of
from maven_fast.data.annotations import align_labels
from maven_fast.data.frames import FrameFolder, write_jpeg
from maven_fast.data.submission import read_frame_list, read_submission, write_submission

NTSC = Fraction(30000, 1001)


def annotation_text(n: int, invalid=(), header="valence,arousal") -> str:
    """Frame k (1-based) gets valence k/100 and arousal -k/100, or -5 when invalid."""
    rows = ["-5,-5" if k in invalid else f"{k / 100},{-k / 100}" for k in range(1, n + 1)]
    return header + "\n" + "\n".join(rows) + "\n"


# -------------------------------------------------------------- annotations
def test_read_va_annotations_masks_minus_five(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(annotation_text(10, invalid={3, 4}))
    values, valid = read_va_annotations(path)
    assert values.dtype == torch.float32 and values.shape == (10, 2) and valid.dtype == torch.bool
    assert valid.tolist() == [True, True, False, False] + [True] * 6
    assert values[0].tolist() == pytest.approx([0.01, -0.01]) and values[2].tolist() == [0.0, 0.0]
    assert values[9].tolist() == pytest.approx([0.10, -0.10])


def test_annotation_bom_crlf_bad_lines_keep_alignment(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(("\ufeffValence,Arousal\r\n0.1,0.2\r\n0.5\r\n\r\n0.3,-5\r\n1.5,0.1\r\n0.4,0.4\r\n\r\n")
                     .encode("utf-8"))
    with pytest.warns(DataWarning) as caught:
        values, valid = read_va_annotations(path)
    assert valid.tolist() == [True, False, False, False, False, True]  # line 7 is still frame 6
    assert values[5].tolist() == pytest.approx([0.4, 0.4])
    messages = [str(w.message) for w in caught]
    assert any("a.txt:6: value '1.5,0.1' is outside [-1, 1]" in m for m in messages)
    assert any("a.txt:3: 2 malformed line(s)" in m and "lines 3, 4" in m for m in messages)


def test_wrong_or_missing_header_is_an_error_naming_file_and_line(tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(annotation_text(3, header="arousal,valence"))
    with pytest.raises(DataError, match=r"wrong\.txt:1: expected the header line 'valence,arousal'"):
        read_va_annotations(wrong)
    missing = tmp_path / "missing.txt"
    missing.write_text("0.1,0.2\n0.3,0.4\n")
    with pytest.raises(DataError, match="fix: add the header line"):
        read_va_annotations(missing)
    with pytest.raises(DataError, match="not found"):
        read_va_annotations(tmp_path / "absent.txt")


def test_fewer_or_more_label_lines_than_frames_is_reported():
    values, valid = torch.rand(5, 2), torch.ones(5, dtype=torch.bool)
    report = Report()
    with pytest.warns(DataWarning, match="5 label lines but the video has 8 frames; frames 6..8"):
        v, m = align_labels(values, valid, 8, path="a.txt", report=report)
    assert v.shape == (8, 2) and m.tolist() == [True] * 5 + [False] * 3
    with pytest.warns(DataWarning, match="the last 2 lines are ignored"):
        v, m = align_labels(values, valid, 3, path="a.txt", report=report)
    assert torch.equal(v, values[:3]) and len(report) == 2


# ----------------------------------------------------------- dataset layout
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """vid1: one person, 30 frames @30 fps, images 5-6 missing, frames 10-11 labelled -5.
    vid2: two people (_left/_right), 24 frames @30000/1001. vid3 (val): frames only."""
    root = tmp_path_factory.mktemp("affwild2")
    make_mp4(root / "videos" / "batch1" / "vid1.mp4", n=30, fps=Fraction(30))
    make_mp4(root / "videos" / "batch2" / "vid2.mp4", n=24, fps=NTSC)
    train = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    val = root / "annotations" / "VA_Estimation_Challenge" / "Validation_Set"
    train.mkdir(parents=True)
    val.mkdir(parents=True)
    (train / "vid1.txt").write_text(annotation_text(30, invalid={10, 11}))
    (train / "vid2_left.txt").write_text(annotation_text(24))
    (train / "vid2_right.txt").write_text(annotation_text(20))  # 4 lines short
    (val / "vid3.txt").write_text(annotation_text(12))
    for name, n, missing in [("vid1", 30, {5, 6}), ("vid2_left", 24, set()), ("vid2_right", 24, {24}),
                             ("vid3", 12, {2})]:
        folder = root / "cropped_aligned" / name
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            if k not in missing:
                write_jpeg(folder / f"{k:05d}.jpg", np.full((16, 16, 3), 8 * k, np.uint8))
    import soundfile

    (root / "audio").mkdir()
    soundfile.write(root / "audio" / "vid1.wav", np.zeros(16000, np.float32), 16000)
    (root / "transcripts").mkdir()
    (root / "transcripts" / "vid1.srt").write_text(
        "1\n00:00:00,200 --> 00:00:00,500\nfirst\n\n2\n00:00:00,600 --> 00:00:00,900\nsecond\n")
    (root / "transcripts" / "vid2.vtt").write_text("WEBVTT\n\n00:00.100 --> 00:00.400\n<v A>shared\n")
    return root


def test_layout_discovery_and_side_mapping(dataset):
    layout = AffWild2Layout.discover(dataset)
    assert layout.videos_dir == dataset / "videos"
    assert layout.frames_dir == dataset / "cropped_aligned"
    assert layout.annotations_dir.name == "VA_Estimation_Challenge"
    assert layout.transcripts_dir == dataset / "transcripts" and layout.audio_dir == dataset / "audio"
    assert AffWild2Layout.discover(dataset, frames_dir=dataset / "videos").frames_dir == dataset / "videos"
    assert video_of("10-60-1280x720_left") == "10-60-1280x720" and video_of("vid1") == "vid1"
    assert video_of("left_turn") == "left_turn"
    with pytest.raises(DataError, match="dataset folder not found"):
        AffWild2Layout.discover(dataset / "nope")


def test_build_split_maps_left_right_to_their_video(dataset):
    split = build_split(dataset, "train")
    assert [e.name for e in split] == ["vid1", "vid2_left", "vid2_right"]
    vid1, left, right = split.videos
    assert vid1.fps == 30 and vid1.num_frames == 30 and vid1.video_path.endswith("batch1/vid1.mp4")
    assert vid1.audio_path.endswith("audio/vid1.wav")  # a WAV beside the videos wins
    for side in (left, right):
        assert side.video == "vid2" and side.fps == NTSC and side.num_frames == 24
        assert side.video_path.endswith("batch2/vid2.mp4") and side.audio_path == side.video_path
        assert side.transcript_path.endswith("vid2.vtt")
        assert side.frames_dir.endswith(side.name)
    assert [(s.text, s.frame_start, s.frame_stop) for s in split.segments["vid1"]] == \
        [("first", 0, 15), ("second", 15, 27)]
    assert split.segments["vid2_left"][0].speaker == "A"
    assert len(list(split.rows())) == 4


def test_labels_are_aligned_by_frame_number_despite_missing_images(dataset):
    vid1 = build_split(dataset, "train").videos[0]
    values, valid = vid1.labels()
    assert values.shape == (30, 2)
    frames = FrameFolder(vid1.frames_dir)
    present = frames.present(0, 30)
    assert present[4] == present[5] == False  # noqa: E712 - images 00005, 00006 missing
    # Frame k (0-based) carries line k+1's label whatever images are missing.
    np.testing.assert_allclose(values[:, 0].numpy()[valid.numpy()],
                               (np.arange(1, 31) / 100)[valid.numpy()], rtol=1e-6)
    assert valid.tolist()[9:11] == [False, False] and valid.tolist()[4:6] == [True, True]


def test_short_annotation_file_masks_the_rest_with_a_report(dataset):
    right = build_split(dataset, "train").videos[2]
    report = Report()
    with pytest.warns(DataWarning, match="vid2_right.txt: has 20 label lines but the video has 24"):
        values, valid = right.labels(report)
    assert valid.tolist() == [True] * 20 + [False] * 4 and len(report) == 1


def test_frames_only_video_missing_transcript_and_bad_transcript(dataset, tmp_path):
    with pytest.warns(DataWarning) as caught:
        split = build_split(dataset, "val")
    (vid3,) = split.videos
    assert vid3.video_path is None and vid3.fps == 30 and vid3.num_frames == 12
    assert vid3.audio_path is None
    (seg,) = split.segments["vid3"]
    assert (seg.kind, seg.frame_start, seg.frame_stop, seg.text) == ("whole", 0, 12, "")
    text = " ".join(str(w.message) for w in caught)
    assert "no video file; fps assumed 30" in text and "no transcript; the whole video" in text
    # A transcript with no utterance fails that video only, with the reason listed.
    (dataset / "transcripts" / "vid1.srt").rename(tmp_path / "saved.srt")
    (dataset / "transcripts" / "vid1.txt").write_text("no timestamps here\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            split = build_split(dataset, "train")
        assert [e.name for e in split] == ["vid2_left", "vid2_right"]
        assert "vid1.txt" in split.failed["vid1"] and "no utterance" in split.failed["vid1"]
    finally:
        (dataset / "transcripts" / "vid1.txt").unlink()
        (tmp_path / "saved.srt").rename(dataset / "transcripts" / "vid1.srt")


def test_exact_mode_and_tail(dataset):
    split = build_split(dataset, "train", mode="exact", names=["vid1"])
    assert [(s.frame_start, s.frame_stop) for s in split.segments["vid1"]] == [(6, 15), (18, 27)]
    split = build_split(dataset, "train", tail=True, names=["vid1"])
    assert [(s.kind, s.frame_start, s.frame_stop) for s in split.segments["vid1"]][-1] == ("tail", 27, 30)


# --------------------------------------------------------------- submission
def test_submission_round_trip_with_interpolation_from_the_frame_list(tmp_path):
    frame_list = tmp_path / "frames.txt"
    rows = [f"a/{k:05d}.jpg" for k in range(1, 7)] + [f"b_left/{k:05d}.jpg" for k in (1, 2, 3)]
    frame_list.write_text("image_location,valence,arousal\n" + "\n".join(rows) + "\n")
    assert read_frame_list(frame_list) == rows
    dense_a = np.array([[0.1, 0.2], [np.nan, np.nan], [0.3, 0.4], [0.5, -0.6], [0.5, -0.6], [2.0, -3.0]])
    sparse_b = (np.array([2]), np.array([[-0.25, 0.75]]))
    out = tmp_path / "sub.txt"
    report = write_submission(out, {"a": dense_a, "b_left": sparse_b}, frame_list)
    assert "3 frame(s) of 2 video(s) had no prediction" in report.lines()[0]
    lines = out.read_text().splitlines()
    assert lines[0] == "image_location,valence,arousal" and len(lines) == 10
    assert lines[1] == "a/00001.jpg,0.100000,0.200000"
    assert lines[2] == "a/00002.jpg,0.200000,0.300000"  # interpolated between frames 1 and 3
    assert lines[6] == "a/00006.jpg,1.000000,-1.000000"  # clipped to [-1, 1]
    assert lines[7] == lines[8].replace("00002", "00001")  # before the first prediction: nearest
    back = read_submission(out)
    assert back["a"][0].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(back["a"][1][[0, 2, 3]], dense_a[[0, 2, 3]], atol=1e-6)
    np.testing.assert_allclose(back["b_left"][1], np.tile([[-0.25, 0.75]], (3, 1)), atol=1e-6)
    # Written again from what was read, the file is identical.
    write_submission(tmp_path / "again.txt", back, rows)
    assert (tmp_path / "again.txt").read_text() == out.read_text()


def test_submission_errors(tmp_path):
    with pytest.raises(DataError, match=r"no prediction for 1 video\(s\) of the frame list: b"):
        write_submission(tmp_path / "s.txt", {"a": np.zeros((2, 2))}, ["a/00001.jpg", "b/00001.jpg"])
    bad = tmp_path / "list.txt"
    bad.write_text("image_location\na/00001.jpg\na/frame-two.png\n")
    with pytest.raises(DataError, match=r"list\.txt:3: not an image location"):
        read_frame_list(bad)
    sub = tmp_path / "bad_sub.txt"
    sub.write_text("image_location,valence,arousal\na/00001.jpg,0.1\n")
    with pytest.raises(DataError, match=r"bad_sub\.txt:2: expected 3 columns"):
        read_submission(sub)
    # Without a frame list, every frame up to the last prediction is written.
    write_submission(tmp_path / "all.txt", {"v": (np.array([1, 3]), np.array([[0.0, 0.0], [0.2, 0.2]]))})
    assert (tmp_path / "all.txt").read_text().splitlines()[2] == "v/00002.jpg,0.100000,0.100000"


def test_test_split_needs_the_organisers_list(dataset, tmp_path):
    with pytest.raises(DataError, match="--test-list"):
        build_split(dataset, "test")
    listing = tmp_path / "test_videos.txt"
    listing.write_text("vid1.mp4\nvid2_left\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        split = build_split(dataset, "test", test_list=listing)
    assert [e.name for e in split] == ["vid1", "vid2_left"]
    assert all(e.annotation_path is None for e in split)
    values, valid = split.videos[0].labels()
    assert values.shape == (30, 2) and not valid.any()
    frames = tmp_path / "frames.txt"
    frames.write_text("image_location,valence,arousal\nvid2_right/00001.jpg\nvid2_right/00002.jpg\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert [e.name for e in build_split(dataset, "test", test_list=frames)] == ["vid2_right"]


def test_duplicate_frame_predictions_are_averaged(tmp_path):
    out = tmp_path / "s.txt"
    write_submission(out, {"a": (np.array([1, 2, 2, 3]), np.array([[0.0, 0], [0.2, 0], [0.4, 0], [0.6, 0]]))})
    assert out.read_text().splitlines()[2] == "a/00002.jpg,0.300000,0.000000"
