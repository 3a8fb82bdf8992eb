"""Segmentation: MAVEN's contiguous rule, exact spans, exact frame/sample ranges."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from maven_fast.data import DataWarning, Report, Utterance, segment, whole_video_segment
from maven_fast.data.segmentation import as_fraction, first_index_at

NTSC = Fraction(30000, 1001)


def utts(*spans):
    return [Utterance(a, b, f"u{i}", line=i + 1) for i, (a, b) in enumerate(spans)]


def brute_force_frames(start: float, end: float, fps: Fraction) -> range:
    """Frames i whose time i/fps lies in [start, end), by exact rational comparison."""
    t0, t1 = Fraction(str(start)), Fraction(str(end))
    lo, hi = int(float(t0 * fps)) - 2, int(float(t1 * fps)) + 2  # search near the ends only
    hits = [i for i in range(max(0, lo), hi) if t0 <= Fraction(i) / fps < t1]
    assert not hits or (hits[0] > lo and hits[-1] < hi - 1) or hits[0] == 0
    return range(hits[0], hits[-1] + 1) if hits else range(0)


def test_contiguous_is_maven_rule_previous_end_to_end():
    segs = segment(utts((1.0, 2.0), (2.5, 4.0), (5.0, 6.5)), "contiguous", fps=30)
    assert [(s.start, s.end, s.text) for s in segs] == [(0.0, 2.0, "u0"), (2.0, 4.0, "u1"), (4.0, 6.5, "u2")]
    assert [(s.frame_start, s.frame_stop) for s in segs] == [(0, 60), (60, 120), (120, 195)]
    assert [(s.sample_start, s.sample_stop) for s in segs] == [(0, 32000), (32000, 64000), (64000, 104000)]


def test_exact_uses_utterance_spans():
    segs = segment(utts((1.0, 2.0), (2.5, 4.0)), "exact", fps=25, sample_rate=16000)
    assert [(s.frame_start, s.frame_stop) for s in segs] == [(25, 50), (63, 100)]  # 2.5*25 = 62.5 -> 63
    assert [(s.sample_start, s.sample_stop) for s in segs] == [(16000, 32000), (40000, 64000)]


@pytest.mark.parametrize("fps", [Fraction(2997, 100), NTSC, 29.97, 30000 / 1001, 25, 24000 / 1001])
def test_fractional_fps_boundaries_are_exact(fps):
    q = as_fraction(fps)
    rng = random.Random(0)
    ends = sorted({round(rng.uniform(0.1, 120.0), 3) for _ in range(60)})
    # Add ends that fall exactly on a frame time, where float arithmetic goes wrong.
    ends = sorted(set(ends) | {float(Fraction(k) / q) for k in (300, 2997, 1001) if
                               Fraction(str(float(Fraction(k) / q))) * q == k})
    segs = segment([Utterance(max(0.0, e - 0.5), e, "x") for e in ends], "contiguous", fps=fps)
    for s in segs:
        expected = brute_force_frames(s.start, s.end, q)
        assert (s.frame_start, s.frame_stop) == (expected.start, expected.stop) or \
            (len(expected) == 0 and s.num_frames == 0), (s, expected)
    # Contiguous segments tile the frames: no gap, no overlap.
    assert segs[0].frame_start == 0
    assert all(a.frame_stop == b.frame_start for a, b in zip(segs, segs[1:]))
    assert all(a.sample_stop == b.sample_start for a, b in zip(segs, segs[1:]))


def test_boundary_frame_at_exact_time_goes_to_the_next_segment_at_29_97():
    # At 2997/100 fps, frame 2997 is shown at exactly 100.0 s.
    first, second = segment(utts((0.0, 100.0), (100.0, 101.0)), "contiguous", fps=29.97)
    assert (first.frame_start, first.frame_stop) == (0, 2997)
    assert (second.frame_start, second.frame_stop) == (2997, 3027)  # ceil(101 * 29.97) = ceil(3026.97)
    # At 30000/1001 fps, frame 300 is at exactly 10.01 s.
    first, second = segment(utts((0.0, 10.01), (10.01, 11.0)), "contiguous", fps=NTSC)
    assert first.frame_stop == 300 and second.frame_start == 300
    assert second.frame_stop == math.ceil(Fraction(11) * NTSC) == 330
    # Frame 15 is at exactly 0.5005 s, but in floats 0.5005 * 29.97002997 = 14.999999999999998,
    # so the original's int(start * fps) would start the next segment at frame 14 (an overlap).
    assert int(0.5005 * (30000 / 1001)) == 14
    first, second = segment(utts((0.0, 0.5005), (0.5005, 1.0)), "contiguous", fps=30000 / 1001)
    assert (first.frame_stop, second.frame_start) == (15, 15)


def test_first_index_at_and_as_fraction():
    assert as_fraction(29.97) == Fraction(2997, 100)
    assert as_fraction(30000 / 1001) == NTSC
    assert as_fraction(30) == 30
    with pytest.raises(ValueError):
        as_fraction(0)
    assert first_index_at(0.1, Fraction(10)) == 1  # float 0.1 * 10 is 1.0000000000000002 in binary
    assert first_index_at(1 / 3, Fraction(16000)) == 5334


def test_tail_segment_covers_frames_after_last_utterance():
    segs = segment(utts((1.0, 2.0)), "contiguous", fps=30, num_frames=100, tail=True)
    assert [(s.kind, s.frame_start, s.frame_stop, s.text) for s in segs] == \
        [("utterance", 0, 60, "u0"), ("tail", 60, 100, "")]
    assert segs[-1].sample_stop == math.ceil(100 / 30 * 16000)
    with pytest.raises(ValueError, match="num_frames"):
        segment(utts((1.0, 2.0)), fps=30, tail=True)


def test_transcript_longer_than_video_is_clipped_and_reported():
    report = Report()
    with pytest.warns(DataWarning) as caught:
        segs = segment(utts((0.5, 1.0), (1.5, 4.0), (5.0, 6.0)), "contiguous", fps=30, num_frames=90,
                       source="v.srt", report=report)
    assert [(s.frame_start, s.frame_stop) for s in segs] == [(0, 30), (30, 90)]
    assert segs[1].end == 3.0
    lines = [(i.path, i.line, i.message) for i in report]
    assert lines[0][:2] == ("v.srt", 2) and "runs past the video end" in lines[0][2]
    assert lines[1][:2] == ("v.srt", 3) and "starts after the video ends" in lines[1][2]
    assert len(caught) == 2


def test_nested_utterance_in_contiguous_mode_is_merged_and_reported():
    with pytest.warns(DataWarning, match="ends before the previous segment"):
        segs = segment(utts((0.0, 5.0), (1.0, 2.0), (5.5, 6.0)), "contiguous", fps=10)
    assert [(s.start, s.end, s.text) for s in segs] == [(0.0, 5.0, "u0 u1"), (5.0, 6.0, "u2")]


def test_segment_without_frames_is_reported():
    with pytest.warns(DataWarning, match="spans no video frame"):
        segs = segment(utts((1.01, 1.02)), "exact", fps=30)
    assert segs[0].num_frames == 0 and segs[0].num_samples == 160


def test_whole_video_segment_and_round_trip():
    s = whole_video_segment(91, NTSC)
    assert (s.frame_start, s.frame_stop, s.kind) == (0, 91, "whole")
    assert s.sample_stop == math.ceil(Fraction(91) / NTSC * 16000)
    assert type(s).from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="mode"):
        segment([], "fuzzy", fps=30)
