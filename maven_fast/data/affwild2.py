"""Aff-Wild2 (ABAW valence-arousal) datasets: find the files, build a split's index.

Expected layout (names in brackets are searched for; each part can be given
explicitly to :meth:`AffWild2Layout.discover`)::

    ROOT/
      videos/            (or raw_videos/) <video>.mp4|avi|mkv|mov|webm, in any sub-folder
                         (the real dataset has batch1/, batch2/, new_vids/)
      cropped_aligned/   (or cropped-aligned/, frames/) <name>/00001.jpg ... (1-based, gaps allowed)
      audio/             optional <video>.wav (else the video file's own track)
      transcripts/       optional <name or video>.txt|srt|vtt|json|tsv
      .../VA_Estimation_Challenge/Train_Set/<name>.txt
                                 /Validation_Set/<name>.txt

``<name>`` is the annotated person. ``<video>_left`` / ``<video>_right``
(two people in one video) map to ``<video>`` for the video file, its fps,
its audio and (unless a per-person one exists) its transcript; their frames
come from their own crop folders. Labels are aligned to frames by frame
number: annotation line ``k + 1`` is frame ``k`` whatever images are missing.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from maven_fast.data.annotations import align_labels, read_va_annotations
from maven_fast.data.report import DataError, Report
from maven_fast.data.segmentation import Segment, segment, whole_video_segment

SPLITS = {"train": "Train_Set", "val": "Validation_Set", "test": None}
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
TRANSCRIPT_EXTENSIONS = (".txt", ".srt", ".vtt", ".json", ".tsv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg")
DEFAULT_FPS = Fraction(30)
_SIDE = re.compile(r"^(?P<video>.+)_(?P<side>left|right)$")


def video_of(name: str) -> str:
    """The video an annotated person belongs to: ``x_left`` / ``x_right`` -> ``x``."""
    m = _SIDE.match(name)
    return m.group("video") if m else name


@dataclass
class AffWild2Layout:
    """Where the parts of an Aff-Wild2-shaped dataset are (``None``: absent)."""

    root: Path
    videos_dir: Path | None = None
    frames_dir: Path | None = None
    annotations_dir: Path | None = None
    transcripts_dir: Path | None = None
    audio_dir: Path | None = None

    @classmethod
    def discover(cls, root: str | os.PathLike, **given: str | os.PathLike | None) -> "AffWild2Layout":
        """Find the standard folders under ``root``; keyword arguments override them."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "dataset folder not found", fix="check the path")

        def first(*names: str) -> Path | None:
            return next((root / n for n in names if (root / n).is_dir()), None)

        found = {
            "videos_dir": first("videos", "raw_videos", "Videos"),
            "frames_dir": first("cropped_aligned", "cropped-aligned", "frames"),
            "annotations_dir": _find_dir(root, "VA_Estimation_Challenge", depth=3),
            "transcripts_dir": first("transcripts", "transcript"),
            "audio_dir": first("audio", "audios"),
        }
        for key, value in given.items():
            if key not in found:
                raise TypeError(f"unknown layout part {key!r}; use one of {sorted(found)}")
            if value is not None:
                found[key] = Path(value)
        return cls(root=root, **found)

    def annotation_dir(self, split: str) -> Path | None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if SPLITS[split] is None or self.annotations_dir is None:
            return None
        d = self.annotations_dir / SPLITS[split]
        return d if d.is_dir() else None


def _find_dir(root: Path, name: str, depth: int) -> Path | None:
    if (root / name).is_dir():
        return root / name
    if depth == 0:
        return None
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        hit = _find_dir(child, name, depth - 1)
        if hit is not None:
            return hit
    return None


def _files_by_stem(folder: Path | None, extensions: tuple[str, ...], report: Report,
                   recursive: bool) -> dict[str, Path]:
    if folder is None:
        return {}
    found: dict[str, Path] = {}
    paths = folder.rglob("*") if recursive else folder.iterdir()
    for p in sorted(paths):
        if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("."):
            if p.stem in found:
                report.add(folder, f"two files for {p.stem!r} ({found[p.stem].name}, {p.name}); "
                                   f"using {found[p.stem]}")
                continue
            found[p.stem] = p
    return found


@dataclass
class VideoEntry:
    """One annotated person's material: files, frame rate, frame count."""

    name: str
    video: str
    split: str
    fps: Fraction
    num_frames: int
    video_path: str | None = None
    frames_dir: str | None = None
    audio_path: str | None = None
    transcript_path: str | None = None
    annotation_path: str | None = None

    def labels(self, report: Report | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels ``[num_frames, 2]`` and validity ``[num_frames]`` aligned by frame number
        (all invalid when the person has no annotation file, as in the test split)."""
        if self.annotation_path is None:
            return torch.zeros(self.num_frames, 2), torch.zeros(self.num_frames, dtype=torch.bool)
        report = report if report is not None else Report()
        values, valid = read_va_annotations(self.annotation_path, report=report)
        return align_labels(values, valid, self.num_frames, path=self.annotation_path, report=report)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        return d


@dataclass
class SplitIndex:
    """A split's videos, their segments, the problems met and the videos that failed."""

    split: str
    layout: AffWild2Layout
    mode: str
    videos: list[VideoEntry] = field(default_factory=list)
    segments: dict[str, list[Segment]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    report: Report = field(default_factory=Report)

    def __iter__(self):
        return iter(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def rows(self):
        """(video entry, segment) pairs, in order: the dataset index."""
        for entry in self.videos:
            for seg in self.segments[entry.name]:
                yield entry, seg


def build_split(root: str | os.PathLike | AffWild2Layout, split: str, *,
                mode: str = "contiguous", tail: bool = False, names: list[str] | None = None,
                test_list: str | os.PathLike | None = None,
                sample_rate: int = 16000, default_fps: Fraction | float = DEFAULT_FPS,
                report: Report | None = None) -> SplitIndex:
    """Index one split: every annotated person's files, fps, frame count and segments.

    ``names`` restricts the people; for the test split (no annotations) they
    come from ``names`` or ``test_list``, the organisers' list of test videos
    or their frame list (see :func:`~maven_fast.data.submission.read_name_list`). A video
    whose material is unusable (e.g. a transcript with no utterance, a video
    that cannot be opened) is listed in ``failed`` with the reason and the
    others go on. A person without a transcript gets one segment spanning the
    whole video (reported).
    """
    from maven_fast.data.frames import FrameFolder
    from maven_fast.data.transcripts import read_transcript

    layout = root if isinstance(root, AffWild2Layout) else AffWild2Layout.discover(root)
    report = report if report is not None else Report()
    index = SplitIndex(split=split, layout=layout, mode=mode, report=report)
    annotations = _files_by_stem(layout.annotation_dir(split), (".txt",), report, recursive=False)
    if split != "test" and not annotations and names is None:
        raise DataError(layout.annotations_dir or layout.root,
                        f"no annotation files for split {split!r}",
                        fix=f"put them in VA_Estimation_Challenge/{SPLITS[split]}/ or pass "
                            "annotations_dir")
    if names is None and test_list is not None:
        from maven_fast.data.submission import read_name_list

        names = read_name_list(test_list)
    if names is None and split == "test":
        raise DataError(layout.root, "the test split has no annotation files to list its videos",
                        fix="pass the organisers' list of test videos or their frame list "
                            "(--test-list FILE, or test_list=/names=)")
    if names is None:
        names = sorted(annotations)
    videos = _files_by_stem(layout.videos_dir, VIDEO_EXTENSIONS, report, recursive=True)
    audios = _files_by_stem(layout.audio_dir, AUDIO_EXTENSIONS, report, recursive=False)
    transcripts = _files_by_stem(layout.transcripts_dir, TRANSCRIPT_EXTENSIONS, report,
                                 recursive=False)
    for name in names:
        try:
            entry = _make_entry(name, split, layout, videos, audios, annotations, transcripts,
                                Fraction(default_fps), report, FrameFolder)
            if entry.transcript_path is not None:
                t = read_transcript(entry.transcript_path)
                report.extend(t.report)
                segs = segment(t.utterances, mode, fps=entry.fps, sample_rate=sample_rate,
                               num_frames=entry.num_frames, tail=tail,
                               source=entry.transcript_path, report=report)
            else:
                report.add(name, "no transcript; the whole video is one segment with empty text")
                segs = [whole_video_segment(entry.num_frames, entry.fps, sample_rate)]
        except DataError as err:
            report.add(name, f"skipped: {err}")
            index.failed[name] = str(err)
            continue
        index.videos.append(entry)
        index.segments[name] = segs
    return index


def _make_entry(name, split, layout, videos, audios, annotations, transcripts, default_fps,
                report, FrameFolder) -> VideoEntry:
    from maven_fast.data.media import probe_video

    video = video_of(name)
    video_path = videos.get(name) or videos.get(video)
    frames_dir = layout.frames_dir / name if layout.frames_dir is not None else None
    frames_dir = frames_dir if frames_dir is not None and frames_dir.is_dir() else None
    annotation = annotations.get(name)
    if video_path is None and frames_dir is None:
        raise DataError(name, "neither a video file nor a frame folder was found",
                        fix=f"put {video}.mp4 under {layout.videos_dir or 'ROOT/videos'} or frames "
                            f"under {layout.frames_dir or 'ROOT/cropped_aligned'}/{name}/")
    if video_path is not None:
        info = probe_video(video_path)
        fps, num_frames = info.fps, info.num_frames
        if frames_dir is None and _SIDE.match(name):
            report.add(name, f"no crop folder for {name}; the full frames of {video_path.name} "
                             "(both people) are used")
    else:
        fps = default_fps
        num_frames = _count_without_video(name, frames_dir, annotation, FrameFolder)
        report.add(name, f"no video file; fps assumed {float(fps):g} and {num_frames} frames "
                         "(from the annotation lines or the last frame image)")
    audio_path = audios.get(video) or audios.get(name) or video_path
    if audio_path is None:
        report.add(name, "no audio (no video file, no WAV); its audio is silence")
    transcript = transcripts.get(name) or transcripts.get(video)
    return VideoEntry(name=name, video=video, split=split, fps=fps, num_frames=num_frames,
                      video_path=str(video_path) if video_path else None,
                      frames_dir=str(frames_dir) if frames_dir else None,
                      audio_path=str(audio_path) if audio_path else None,
                      transcript_path=str(transcript) if transcript else None,
                      annotation_path=str(annotation) if annotation else None)


def _count_without_video(name, frames_dir, annotation, FrameFolder) -> int:
    if annotation is not None:
        from maven_fast.data.annotations import annotation_lines

        # Decoding problems are reported when the labels are read (VideoEntry.labels).
        return max(0, len(annotation_lines(annotation, Report(), warn=False)) - 1)
    return FrameFolder(frames_dir).num_frames
