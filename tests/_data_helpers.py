"""Small media builders shared by the data-pipeline tests (not a test module)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from maven_fast.data.synth import write_mp4


def ramp_frames(n: int, size: int = 32, step: int = 4) -> list[np.ndarray]:
    """Frame i is a flat grey image of value ``step * i`` (so order can be checked after decoding)."""
    return [np.full((size, size, 3), min(255, step * i), np.uint8) for i in range(n)]


def sine(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_mp4(path: Path, n: int = 45, fps: Fraction = Fraction(30000, 1001), size: int = 32,
             audio_rate: int | None = 24000, freq: float = 440.0) -> Path:
    """An MP4 of ``n`` ramp frames at ``fps``; a sine track of the same duration unless
    ``audio_rate`` is None (then the file has no audio track)."""
    audio = sine(n / float(fps), audio_rate, freq) if audio_rate else None
    write_mp4(path, ramp_frames(n, size), fps, audio, audio_rate or 16000)
    return path
