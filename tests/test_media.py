"""Decoding real files: video frames on the frame grid, 16 kHz mono audio, frame folders, bad files."""
from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from _data_helpers import make_mp4, sine
from maven_fast.data import DataError, DataWarning
from maven_fast.data.audio import AudioReader, load_audio
from maven_fast.data.frames import FrameFolder, read_image, write_jpeg
from maven_fast.data.media import VideoReader, probe_video

NTSC = Fraction(30000, 1001)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    return make_mp4(tmp_path_factory.mktemp("media") / "clip.mp4", n=45, fps=NTSC)


def test_probe_reads_fps_frames_and_audio(mp4):
    info = probe_video(mp4)
    assert info.fps == NTSC and info.num_frames == 45
    assert (info.width, info.height) == (32, 32)
    assert info.has_audio and info.audio_sample_rate == 24000
    assert info.duration == pytest.approx(45 / float(NTSC), abs=0.01)
    assert probe_video(mp4, count_frames=True).num_frames == 45


def test_decoding_returns_every_frame_in_order(mp4):
    with VideoReader(mp4) as reader:
        frames = reader.read(0, 45)
        assert frames.shape == (45, 32, 32, 3) and frames.dtype == np.uint8
        levels = frames.reshape(45, -1).mean(axis=1)
        np.testing.assert_allclose(levels, 4 * np.arange(45), atol=3)  # lossy H.264, order intact
        assert reader.repeated == 0 and reader.dropped == 0
        # Chunked streaming gives the same frames; reading backward re-seeks.
        chunks = list(reader.iter_frames(10, 40, chunk=7))
        assert [len(c) for c in chunks] == [7, 7, 7, 7, 2]
        np.testing.assert_array_equal(np.concatenate(chunks), frames[10:40])
        np.testing.assert_array_equal(reader.read(3, 5), frames[3:5])
        np.testing.assert_array_equal(reader.read(44, 45), frames[44:45])
    with VideoReader(mp4, size=(16, 8)) as small:
        assert small.read(0, 2).shape == (2, 8, 16, 3)


def test_reading_just_past_the_end_pads_with_a_report_far_past_is_an_error(mp4):
    with VideoReader(mp4) as reader:
        with pytest.warns(DataWarning, match="last frame is repeated"):
            frames = reader.read(43, 46)
        assert len(frames) == 3 and len(reader.report) == 1
        np.testing.assert_array_equal(frames[1], frames[2])
        with pytest.raises(DataError, match="clip.mp4.*decoding stopped at frame 45"):
            reader.read(40, 60)


def test_variable_frame_rate_is_put_on_the_grid_by_timestamps(tmp_path):
    import av

    path = tmp_path / "vfr.mp4"
    times_ms = [0, 33, 67, 100, 200, 233, 250, 267, 300, 333]  # a gap after 100, two frames near 250
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = ms, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe_video(path)
    with VideoReader(path) as reader:
        frames = reader.read(0, info.num_frames)
        assert len(frames) == info.num_frames == len(times_ms)
        assert reader.repeated >= 1 and reader.dropped >= 1  # gap filled, crowded slot dropped
        levels = frames.reshape(len(frames), -1).mean(axis=1)
        assert np.all(np.diff(levels) >= -3)  # time order kept


def test_audio_is_16k_mono_with_the_tracks_duration(mp4):
    audio = load_audio(mp4)
    duration = 45 / float(NTSC)
    expected = duration * 16000
    assert audio.dtype == torch.float32 and audio.ndim == 1
    assert expected <= audio.numel() <= expected + 2 * 1024 * 16000 / 24000 + 16  # AAC padding
    spectrum = torch.fft.rfft(audio[:16000]).abs()
    assert int(spectrum.argmax()) == pytest.approx(440, abs=2)  # 1 Hz bins over one second
    assert float(audio[2000:14000].abs().max()) == pytest.approx(0.5, abs=0.06)


def test_streamed_audio_ranges_equal_resampling_the_whole_track(mp4):
    import torchaudio.functional as AF

    with AudioReader(mp4) as reader:
        native = torch.from_numpy(reader.read_native(0, 10**6, clip_to_track=True))
        whole = AF.resample(native[None], 24000, 16000)[0]
        for start, stop in [(0, 1000), (1000, 9999), (9999, 10000), (12345, 20000), (7, 8)]:
            torch.testing.assert_close(reader.read(start, stop), whole[start:stop], atol=1e-5, rtol=0)
        tail = reader.read(whole.numel() - 10, whole.numel() + 50)  # past the end: zeros
        torch.testing.assert_close(tail[:10], whole[-10:], atol=1e-5, rtol=0)
        assert torch.all(tail[10:] == 0)


def test_video_without_audio_track_reads_silence_with_a_warning(tmp_path):
    path = make_mp4(tmp_path / "mute.mp4", n=20, audio_rate=None)
    assert not probe_video(path).has_audio
    with pytest.warns(DataWarning, match="mute.mp4: has no audio track"):
        reader = AudioReader(path)
    assert not reader.has_audio and len(reader.report) == 1
    assert torch.equal(reader.read(100, 600), torch.zeros(500))


def test_wav_files_are_accepted_stereo_44k_to_mono_16k(tmp_path):
    import soundfile

    left, right = sine(1.0, 44100, 300.0), sine(1.0, 44100, 300.0, amplitude=0.1)
    soundfile.write(tmp_path / "a.wav", np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    audio = load_audio(tmp_path / "a.wav")
    assert audio.numel() == 16000
    assert float(audio[2000:14000].abs().max()) == pytest.approx(0.3, abs=0.02)  # mean of channels


def test_corrupt_and_truncated_videos_are_clear_errors(tmp_path, mp4):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"garbage\.mp4: cannot open as a video.*fix: re-download"):
        probe_video(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.mp4") as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        info = probe_video(truncated)
        VideoReader(truncated, info=info).read(0, info.num_frames)
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)
    # A container whose header survives (Matroska) but whose data is cut: decoding stops early.
    whole = make_mp4(tmp_path / "whole.mkv", n=60, audio_rate=None)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    info = probe_video(cut)
    assert info.num_frames == 60
    with pytest.raises(DataError, match=r"cut\.mkv: decoding stopped at frame \d+ but frames up to 60"):
        VideoReader(cut).read(0, 60)
    with pytest.raises(DataError, match="not found"):
        probe_video(tmp_path / "nope.mp4")


def test_frame_folder_gaps_fill_with_nearest_and_are_flagged(tmp_path):
    folder = tmp_path / "vid"
    folder.mkdir()
    for number in (1, 2, 4, 5, 8):  # frames 3, 6, 7 missing
        write_jpeg(folder / f"{number:05d}.jpg", np.full((16, 16, 3), 10 * number, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_text("")
    with pytest.warns(DataWarning, match="1 file.*not numbered frame images"):
        ff = FrameFolder(folder)
    assert ff.num_frames == 8 and ff.num_missing == 3
    images, present = ff.read(0, 10)  # 0-based frames 0..9 = images 1..10
    assert present.tolist() == [True, True, False, True, True, False, False, True, False, False]
    levels = images.reshape(10, -1).mean(axis=1).round(-1) / 10
    assert levels.tolist() == [1, 2, 2, 4, 5, 5, 8, 8, 8, 8]  # nearest present image (ties: earlier)
    chunks = list(ff.iter_frames(0, 10, chunk=4))
    assert [len(c[0]) for c in chunks] == [4, 4, 2]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no numbered images"):
        FrameFolder(empty)


def test_images_read_without_pillow_through_pyav(tmp_path, monkeypatch):
    import builtins

    image = np.zeros((16, 24, 3), np.uint8)
    image[:, :12] = 200
    write_jpeg(tmp_path / "00001.jpg", image)
    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("no PIL")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    decoded = read_image(tmp_path / "00001.jpg")
    assert decoded.shape == (16, 24, 3)
    assert abs(int(decoded[:, :10].mean()) - 200) < 8 and decoded[:, 14:].mean() < 8
    write_jpeg(tmp_path / "00002.jpg", image)  # PyAV writer
    assert read_image(tmp_path / "00002.jpg", size=(12, 8)).shape == (8, 12, 3)
