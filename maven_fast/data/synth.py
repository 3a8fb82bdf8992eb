"""A small synthetic Aff-Wild2-shaped dataset whose labels are carried by the signals.

Every annotated person has a smooth valence/arousal trajectory, and all three
modalities are functions of it, so a model trained on the data can learn:

- video: a face-like shape whose colour goes from blue (valence -1) to
  yellow (+1) and gets brighter with valence, whose mouth smiles or frowns
  with valence, and whose eyes open wider (and background lightens) with
  arousal;
- audio: a tone whose pitch (180-520 Hz) and loudness rise with arousal and
  whose second harmonic grows with valence, louder while an utterance is
  spoken;
- text: each utterance's words come from positive/negative and
  excited/calm word lists chosen by the mean valence/arousal over its span.

Realistic mess is included on purpose: some frame images are missing, some
annotation lines are ``-5,-5``, one video per split runs at 30000/1001 fps,
videos sit in ``batch1/``/``batch2/`` sub-folders, the audio is 24 kHz (so
it is resampled), transcripts come in every supported format, and each split
has a two-person video annotated as ``<video>_left`` / ``<video>_right``.
Everything is a deterministic function of the seed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from maven_fast.data.annotations import write_va_annotations
from maven_fast.data.frames import write_jpeg
from maven_fast.data.transcripts import Utterance, Word, write_transcript

AUDIO_RATE = 24000
TRANSCRIPT_FORMATS = ("maven", "srt", "vtt", "whisper_json", "whisper_tsv")
_EXT = {"maven": ".txt", "srt": ".srt", "vtt": ".vtt", "whisper_json": ".json", "whisper_tsv": ".tsv"}
POSITIVE = ("happy", "wonderful", "great", "love", "delighted", "glad", "lovely", "joyful", "café")
NEGATIVE = ("sad", "terrible", "awful", "hate", "miserable", "upset", "gloomy", "painful")
EXCITED = ("excited", "thrilled", "wow", "amazing", "furious", "shocked", "urgent", "intense")
CALM = ("calm", "tired", "sleepy", "quiet", "relaxed", "slow", "peaceful", "bored")
NEUTRAL = ("the", "meeting", "table", "today", "we", "said", "it", "was", "really", "about")
_SPLIT_FOLDERS = {"train": ("Train_Set", "batch1"), "val": ("Validation_Set", "batch2")}


@dataclass
class SynthPerson:
    """What was written for one annotated person (for tests and inspection)."""

    name: str
    video: str
    split: str
    fps: str
    num_frames: int
    transcript_format: str
    missing_frames: list[int] = field(default_factory=list)   # 1-based image numbers
    invalid_frames: list[int] = field(default_factory=list)   # 1-based, written as -5


def make_synthetic_dataset(out_dir: str | os.PathLike, *, seed: int = 0, videos_per_split: int = 3,
                           frames: int = 240, size: int = 96, fps: int = 30,
                           test_videos: int = 1, splits: tuple[str, ...] = ("train", "val")
                           ) -> list[SynthPerson]:
    """Write the dataset under ``out_dir`` and return what was written per person.

    Per split: ``videos_per_split`` single-person videos plus one two-person
    video (``_left``/``_right``), each about ``frames`` frames of
    ``size`` x ``size`` pixels. ``test_videos`` unannotated videos go in
    ``videos/test/`` with an organiser-style frame list ``test_frame_list.txt``.
    ``synth_info.json`` records the per-person facts.
    """
    if size % 2 or size < 16:
        raise ValueError("size must be even and at least 16 (H.264 needs even sizes)")
    if frames < 30:
        raise ValueError("frames must be at least 30")
    out = Path(out_dir)
    people: list[SynthPerson] = []
    plan = [(split, k) for split in splits for k in range(videos_per_split + 1)]
    plan += [("test", k) for k in range(test_videos)]
    for job, (split, k) in enumerate(plan):
        rng = np.random.default_rng([seed, job])
        pair = split != "test" and k == videos_per_split
        video = f"synth_{split}_{'pair' if pair else f'{k:02d}'}"
        rate = Fraction(30000, 1001) if (k == 1 and fps == 30) else Fraction(fps)
        n = int(frames + rng.integers(0, max(1, frames // 5)))
        fmt = TRANSCRIPT_FORMATS[job % len(TRANSCRIPT_FORMATS)]
        people += _write_video(out, split, video, pair, n, rate, size, fmt, rng)
    if test_videos:
        rows = ["image_location,valence,arousal"]
        for p in people:
            if p.split == "test":
                rows += [f"{p.name}/{i:05d}.jpg" for i in range(1, p.num_frames + 1)]
        (out / "test_frame_list.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    info = {"seed": seed, "people": [p.__dict__ for p in people],
            "signals": {"video": "face colour/brightness/mouth: valence; eyes/background: arousal",
                        "audio": "pitch/loudness: arousal; 2nd harmonic: valence",
                        "text": "positive/negative and excited/calm words"}}
    (out / "synth_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return people


# --------------------------------------------------------------- trajectories
def _trajectory(rng: np.random.Generator, n: int, fps: Fraction) -> np.ndarray:
    """A smooth curve in [-0.95, 0.95] over n frames: a few random slow sinusoids."""
    t = np.arange(n) / float(fps)
    curve = np.zeros(n)
    for _ in range(3):
        curve += rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * rng.uniform(0.05, 0.35) * t
                                                + rng.uniform(0, 2 * np.pi))
    return np.clip(curve + rng.uniform(-0.3, 0.3), -0.95, 0.95)


def _utterances(rng, n: int, fps: Fraction, va: np.ndarray) -> list[Utterance]:
    """Utterances with gaps, ending a little before the video does."""
    duration = n / float(fps)
    out, t = [], float(rng.uniform(0.0, 0.4))
    while True:
        length = float(rng.uniform(0.6, 1.8))
        if t + length > duration - 0.3:
            if out:
                break
            length = duration - 0.3 - t  # a short video still gets one utterance
        a, b = int(t * float(fps)), int((t + length) * float(fps))
        words = _words(rng, va[a:b].mean(axis=0))
        start, end = round(t, 2), round(t + length, 2)
        step = (end - start) / len(words)
        timed = tuple(Word(w, round(start + i * step, 3), round(start + (i + 1) * step, 3), "SPEAKER_00")
                      for i, w in enumerate(words))
        out.append(Utterance(start, end, " ".join(words), "SPEAKER_00", timed))
        t = end + float(rng.uniform(0.05, 0.5))
    return out


def _words(rng, mean_va: np.ndarray) -> list[str]:
    valence, arousal = float(mean_va[0]), float(mean_va[1])
    count = int(rng.integers(4, 8))
    words = []
    for _ in range(count):
        r = rng.uniform()
        if r < 0.4:
            pool = POSITIVE if valence > 0 else NEGATIVE
        elif r < 0.7:
            pool = EXCITED if arousal > 0 else CALM
        else:
            pool = NEUTRAL
        words.append(str(rng.choice(pool)))
    return words


# ------------------------------------------------------------------ rendering
def _face(h: int, w: int, valence: float, arousal: float, noise: np.ndarray) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = y / (h - 1) * 2 - 1, x / (w - 1) * 2 - 1
    pos = (valence + 1) / 2
    image = np.empty((h, w, 3), np.float32)
    image[:] = 0.2 + 0.25 * (arousal + 1) / 2
    face = (x / 0.7) ** 2 + (y / 0.85) ** 2 <= 1
    colour = (1 - pos) * np.array([0.25, 0.4, 0.9]) + pos * np.array([1.0, 0.85, 0.25])
    image[face] = colour * (0.55 + 0.45 * pos)
    eye_h = 0.03 + 0.12 * (arousal + 1) / 2
    for cx in (-0.3, 0.3):
        image[((x - cx) / 0.12) ** 2 + ((y + 0.2) / eye_h) ** 2 <= 1] = 0.05
    mouth_y = 0.4 - 0.45 * valence * (x ** 2 - 0.12)  # corners up (smile) when valence > 0
    image[(np.abs(y - mouth_y) < 0.05) & (np.abs(x) < 0.38)] = (0.5, 0.05, 0.05)
    return np.clip(image * 255 + noise, 0, 255).astype(np.uint8)


def _audio(rng, n: int, fps: Fraction, va: np.ndarray, utterances) -> np.ndarray:
    total = int(n / float(fps) * AUDIO_RATE)
    t = np.arange(total) / AUDIO_RATE
    frame_t = np.arange(n) / float(fps)
    valence = np.interp(t, frame_t, va[:, 0])
    arousal = np.interp(t, frame_t, va[:, 1])
    freq = 180 + 340 * (arousal + 1) / 2
    phase = 2 * np.pi * np.cumsum(freq) / AUDIO_RATE
    speaking = np.zeros(total)
    for u in utterances:
        speaking[int(u.start * AUDIO_RATE): int(u.end * AUDIO_RATE)] = 1.0
    loud = (0.05 + 0.3 * (arousal + 1) / 2) * (0.3 + 0.7 * speaking)
    wave = loud * (np.sin(phase) + 0.6 * (valence + 1) / 2 * np.sin(2 * phase))
    wave += 0.003 * rng.standard_normal(total)
    return np.clip(wave, -1, 1).astype(np.float32)


def write_mp4(path: str | os.PathLike, frames, fps: Fraction, audio: np.ndarray | None,
              audio_rate: int = AUDIO_RATE) -> None:
    """Encode RGB frames (H.264) and optional mono audio (AAC) into an MP4 file."""
    import av

    frames = iter(frames)
    first = next(frames)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=audio_rate)
            audio_stream.layout = "mono"
        for image in [first, *frames]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            for start in range(0, len(audio), 1024):
                chunk = av.AudioFrame.from_ndarray(audio[None, start:start + 1024], format="fltp",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts = audio_rate, start
                for packet in audio_stream.encode(chunk):
                    container.mux(packet)
            for packet in audio_stream.encode(None):
                container.mux(packet)


def _write_video(out: Path, split: str, video: str, pair: bool, n: int, fps: Fraction, size: int,
                 fmt: str, rng: np.random.Generator) -> list[SynthPerson]:
    sides = ("left", "right") if pair else (None,)
    names = [f"{video}_{s}" if s else video for s in sides]
    tracks = [np.stack([_trajectory(rng, n, fps), _trajectory(rng, n, fps)], axis=1) for _ in sides]
    utterances = _utterances(rng, n, fps, tracks[0])
    noise = rng.normal(0, 3, size=(8, size, size, 1)).astype(np.float32)

    def frame(i: int) -> list[np.ndarray]:
        return [_face(size, size, float(tr[i, 0]), float(tr[i, 1]), noise[i % 8]) for tr in tracks]

    folder, batch = _SPLIT_FOLDERS.get(split, (None, "test"))
    video_dir = out / "videos" / batch
    video_dir.mkdir(parents=True, exist_ok=True)
    write_mp4(video_dir / f"{video}.mp4", (np.concatenate(frame(i), axis=1) for i in range(n)),
              fps, _audio(rng, n, fps, tracks[0], utterances))
    transcripts = out / "transcripts"
    transcripts.mkdir(parents=True, exist_ok=True)
    write_transcript(transcripts / f"{video}{_EXT[fmt]}", utterances, fmt)
    people = []
    for side_index, (name, track) in enumerate(zip(names, tracks)):
        missing = _pick_missing(rng, n)
        crops = out / "cropped_aligned" / name
        crops.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if i + 1 not in missing:
                write_jpeg(crops / f"{i + 1:05d}.jpg", frame(i)[side_index], quality=92)
        person = SynthPerson(name=name, video=video, split=split, fps=f"{fps.numerator}/{fps.denominator}",
                             num_frames=n, transcript_format=fmt, missing_frames=sorted(missing))
        if folder is not None:
            invalid = _pick_invalid(rng, n)
            ann_dir = out / "annotations" / "VA_Estimation_Challenge" / folder
            ann_dir.mkdir(parents=True, exist_ok=True)
            valid = np.ones(n, bool)
            valid[[f - 1 for f in invalid]] = False
            write_va_annotations(ann_dir / f"{name}.txt", np.round(track, 4), valid)
            person.invalid_frames = invalid
        people.append(person)
    return people


def _pick_missing(rng, n: int) -> set[int]:
    """A few 1-based frame numbers without an image (never the first or the last)."""
    missing: set[int] = set()
    for _ in range(max(1, n // 60)):
        start = int(rng.integers(2, n - 4))
        missing.update(range(start, start + int(rng.integers(1, 4))))
    return missing


def _pick_invalid(rng, n: int) -> list[int]:
    """A run of ~5% frames and a few single frames annotated -5 (1-based)."""
    run = max(2, n // 20)
    start = int(rng.integers(1, n - run))
    singles = rng.choice(np.arange(1, n + 1), size=3, replace=False)
    return sorted(set(range(start, start + run)) | {int(s) for s in singles})
