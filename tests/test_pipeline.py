"""The shared decode -> encode pipeline: decoding ahead in a thread, bounded memory, clean
shutdown, errors from the decode thread, and the same features with and without the thread."""
from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _data_helpers import ramp_frames, sine
from maven_fast.data import DataError
from maven_fast.data.pipeline import DecodeAhead, StageTimes, encode_segments
from maven_fast.data.segmentation import Segment

pytestmark = pytest.mark.filterwarnings("ignore::maven_fast.data.report.DataWarning")


def decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "maven-fast-decode"]


# ------------------------------------------------------------------------------ DecodeAhead
def test_the_queue_is_bounded_whatever_the_length():
    for total in (50, 400):
        state = {"produced": 0, "consumed": 0, "ahead": 0}

        def items():
            for i in range(total):
                state["produced"] += 1
                state["ahead"] = max(state["ahead"], state["produced"] - state["consumed"])
                yield i

        with DecodeAhead(items(), maxsize=3) as ahead:
            got = []
            for item in ahead:
                time.sleep(0.0005)  # the consumer is the bottleneck: the producer runs ahead
                state["consumed"] += 1
                got.append(item)
        assert got == list(range(total))
        assert ahead.high_water <= 3
        # queued (<= 3) + one being put + one in the consumer's hand
        assert state["ahead"] <= 3 + 2, f"{total} items: the producer ran {state['ahead']} items ahead"


def test_an_error_in_the_decode_thread_reaches_the_consumer_after_the_good_items():
    def items():
        yield from range(5)
        raise DataError("clip.mp4", "decoding failed after frame 4: corrupt", fix="re-encode it")

    got = []
    with pytest.raises(DataError, match=r"clip.mp4: decoding failed after frame 4.*re-encode it"):
        with DecodeAhead(items(), maxsize=2) as ahead:
            for item in ahead:
                got.append(item)
    assert got == [0, 1, 2, 3, 4]
    assert not ahead.thread.is_alive()


def test_the_thread_stops_cleanly_when_the_consumer_fails():
    closed = threading.Event()

    def items():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    with pytest.raises(RuntimeError, match="encoder failed"):
        with DecodeAhead(items(), maxsize=2) as ahead:
            for item in ahead:
                if item == 3:
                    raise RuntimeError("encoder failed")
    assert not ahead.thread.is_alive() and closed.is_set()
    assert ahead.queue.empty()
    with pytest.raises(ValueError, match="unbounded"):
        DecodeAhead(iter(()), maxsize=0)


# ------------------------------------------------------------------------------ encode_segments
class FakeFrames:
    """A frame source that counts the frames it has handed out."""

    def __init__(self):
        self.decoded = 0

    def iter_frames(self, start, stop, chunk):
        for a in range(start, stop, chunk):
            n = min(stop, a + chunk) - a
            self.decoded += n
            yield np.full((n, 8, 8, 3), a % 251, np.uint8)


def fake_encoders(frames: FakeFrames, record: list):
    def video(pixels):
        record.append(frames.decoded - (video.encoded + pixels.shape[0]))  # decoded, not yet encoded
        video.encoded += pixels.shape[0]
        return pixels.float().mean((1, 2, 3))[:, None].repeat(1, 4)

    video.encoded = 0
    video.preprocess = lambda x: x.permute(0, 3, 1, 2)
    audio = SimpleNamespace(sample_rate=16000, device=torch.device("cpu"),
                            pool=lambda f, n: f.mean(1))

    def audio_call(waves, lengths):
        n = (lengths // 320).clamp_min(1)
        return torch.ones(waves.shape[0], int(n.max()), 2), n

    def text_call(texts):
        return torch.ones(len(texts), 3, 2), torch.full((len(texts),), 3)

    return SimpleNamespace(video=video, audio=_Callable(audio_call, audio), text=_Callable(text_call, SimpleNamespace(
        pool=lambda t, n, masked=True: t.mean(1))))


class _Callable:
    def __init__(self, fn, attrs):
        self._fn, self._attrs = fn, attrs

    def __call__(self, *a, **k):
        return self._fn(*a, **k)

    def __getattr__(self, name):
        return getattr(self._attrs, name)


def segments(total_frames: int, per_segment: int) -> list[Segment]:
    out = []
    for i, a in enumerate(range(0, total_frames, per_segment)):
        b = min(total_frames, a + per_segment)
        out.append(Segment(i, a / 30, b / 30, f"s{i}", a, b, a * 16000 // 30, b * 16000 // 30))
    return out


@pytest.mark.parametrize("total", [600, 6000])
def test_frames_in_flight_are_bounded_by_the_queue_not_the_video(total):
    frames, record = FakeFrames(), []
    encoders = fake_encoders(frames, record)
    times = StageTimes()
    out = []
    for group in encode_segments(frames, None, segments(total, 300), encoders, batch_size=2, frame_batch=16,
                                 prefetch=3, timings=times):
        time.sleep(0.001)
        out += group
    assert sum(f.video.shape[0] for f in out) == total == times.frames
    # decoded but not yet encoded: at most the queue (3 chunks) plus the chunk being put
    assert max(record) <= (3 + 1) * 16, f"{max(record)} frames decoded ahead of the encoder"
    assert {"decode", "preprocess", "wait", "video_encoder", "audio_encoder", "text_encoder"} <= set(times.seconds)


def test_the_decode_thread_ends_when_the_consumer_stops_early():
    frames, record = FakeFrames(), []
    gen = encode_segments(frames, None, segments(3000, 100), fake_encoders(frames, record), batch_size=1,
                          frame_batch=8, prefetch=2)
    next(gen)
    assert decode_threads()
    gen.close()
    assert not decode_threads()
    assert frames.decoded < 3000


# ------------------------------------------------------------------------------ real files
def write_faststart_mp4(path: Path, n: int, fps: Fraction, audio_rate: int = 16000) -> Path:
    """An MP4 with its index first (faststart), so a truncated copy opens and fails mid-stream."""
    import av

    audio = sine(n / float(fps), audio_rate)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height = stream.width = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "1", "g": "10"}
        a_stream = container.add_stream("aac", rate=audio_rate)
        a_stream.layout = "mono"
        for image in ramp_frames(n, 32, step=1):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        for start in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(audio[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = audio_rate
            for packet in a_stream.encode(frame):
                container.mux(packet)
        for packet in a_stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def tiny():
    from maven_fast.encoders import load_encoders

    return load_encoders("tiny")


def test_features_are_the_same_with_and_without_the_decode_thread(tmp_path, tiny):
    from maven_fast.data.audio import AudioReader
    from maven_fast.data.media import VideoReader

    video = write_faststart_mp4(tmp_path / "v.mp4", 40, Fraction(30))
    segs = segments(40, 13)
    runs = []
    for prefetch in (0, 2):
        with VideoReader(video) as frames, AudioReader(video, 16000) as audio:
            runs.append([f for g in encode_segments(frames, audio, segs, tiny, batch_size=2, frame_batch=5,
                                                    max_audio_seconds=0.2, prefetch=prefetch) for f in g])
    for a, b in zip(*runs):
        for name in ("video", "audio", "audio_pooled", "text", "text_pooled", "present"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_a_file_corrupt_mid_stream_fails_alone_in_predict(tmp_path, tiny, monkeypatch):
    from maven_fast.predict.batch import predict_files
    from maven_fast.predict.runner import PredictSettings, predict_video

    good = write_faststart_mp4(tmp_path / "good.mp4", 90, Fraction(30))
    data = good.read_bytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(data[: int(len(data) * 0.55)])
    transcript = tmp_path / "t.txt"
    transcript.write_text("[0.0s - 1.0s]: one\n[1.0s - 3.0s]: two\n", encoding="utf-8")

    model = _TinyModel()
    settings = PredictSettings(frame_batch=8, batch_size=1)
    with pytest.raises(DataError, match=rf"{bad}: decoding stopped at frame \d+ .*truncated or corrupt"):
        predict_video(bad, transcript, model, tiny, settings)
    assert not decode_threads()

    predictor = SimpleNamespace(model=model, encoders=tiny, settings=settings, checkpoint="none",
                                predict=lambda v, t, progress=False: predict_video(v, t, model, tiny, settings))
    result = predict_files(predictor, [(str(bad), str(transcript)), (str(good), str(transcript))], tmp_path / "out",
                           progress=False)
    assert list(result.done) == [str(good)] and list(result.failed) == [str(bad)]
    assert "truncated or corrupt" in result.failed[str(bad)] and str(bad) in result.failed[str(bad)]
    assert not decode_threads()


class _TinyModel(torch.nn.Module):
    """Stands in for MAVEN in the batch runner: per-frame mean of the video features."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(variant="reference_mlp", pooled_inputs=True)

    def forward(self, video, audio, text):
        va = torch.stack([video.mean(-1), video.std(-1)], -1)
        return SimpleNamespace(valence_arousal=va)


# ------------------------------------------------------------------------------ the benchmark's own check
def test_pipeline_benchmark_runs_every_pass_and_reports_stages(tmp_path):
    """The report code of `maven-fast bench --suite pipeline` on tiny encoders and a 2 s video
    (not a timing: the numbers are not checked, only that every pass ran and was reported)."""
    from maven_fast.benchmark.pipeline_suite import run_pipeline

    result = run_pipeline("cpu", True, log=lambda m: None, work_dir=str(tmp_path), dtypes=("float32",),
                          encoders="tiny", video_seconds=2.0, processed=1.0, memory_lengths=(), in_process=True)
    passes, encoder, alone, ratios, memory = result.section.tables
    assert [r[0] for r in passes.rows] == ["decode only", "extract", "predict"]
    decode, extract, predict = passes.rows
    assert decode[2] == 60 and extract[2] == predict[2] == 24  # frames: whole video / first utterance
    stages = dict(zip(passes.header, predict))
    assert stages["video_encoder s"] > 0 and stages["model s"] > 0 and stages["write s"] >= 0
    assert dict(zip(passes.header, extract))["write s"] != ""  # extract's shard writing was timed
    assert encoder.rows[0][:2] == ["extract", "float32"] and encoder.rows[0][2] > 0
    assert alone.rows[0][0] == "float32" and not memory.rows
    assert any(n.startswith("--quick: extract and predict process the first 1 s only") for n in result.section.notes)
