"""Transcripts: one :class:`Utterance` type, read from the formats people have.

Supported formats (``read_transcript`` picks one by content, then extension):

``maven``
    MAVEN's own lines, ``[10.5s - 15.2s]: text``. Integer times, a missing
    ``s`` unit, a missing colon and extra spaces are tolerated.
``srt``
    SubRip blocks (index line, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text lines).
``vtt``
    WebVTT (``WEBVTT`` header, cues with or without hours, optional cue ids,
    ``NOTE``/``STYLE``/``REGION`` blocks, ``<v Speaker>`` voice tags).
``whisper_json``
    Whisper / faster-whisper / WhisperX JSON: ``{"segments": [{"start",
    "end", "text", ...}]}`` or a bare list of such segments. WhisperX's
    ``speaker`` and ``words`` are kept.
``whisper_tsv``
    Whisper's TSV output: header ``start<TAB>end<TAB>text``, integer
    milliseconds.

Problems that can be worked around (a malformed line, end before start,
overlapping or unsorted utterances, an utterance without text) are reported
with file and line in the returned :class:`~maven_fast.data.report.Report`
and as a :class:`~maven_fast.data.report.DataWarning`; a file with no usable
utterance raises :class:`~maven_fast.data.report.DataError`.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from maven_fast.data.report import DataError, Report

FORMATS = ("maven", "srt", "vtt", "whisper_json", "whisper_tsv")
_EXTENSIONS = {".srt": "srt", ".vtt": "vtt", ".json": "whisper_json", ".tsv": "whisper_tsv",
               ".txt": "maven"}


@dataclass(frozen=True)
class Word:
    """One word of a word-aligned transcript (WhisperX); times may be missing."""

    text: str
    start: float | None = None
    end: float | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class Utterance:
    """A stretch of speech: times in seconds from the start of the media."""

    start: float
    end: float
    text: str
    speaker: str | None = None
    words: tuple[Word, ...] = ()
    line: int | None = field(default=None, compare=False)
    """Line of the source file it came from (for messages); not compared."""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Transcript:
    """What :func:`read_transcript` returns: utterances in time order plus problems."""

    path: str
    format: str
    utterances: list[Utterance]
    report: Report

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self):
        return iter(self.utterances)

    def __getitem__(self, index: int) -> Utterance:
        return self.utterances[index]


#: The latest time (seconds) a transcript may name: about three years of media. Larger
#: values (a mangled timestamp such as 999999999:00:00) are reported and skipped.
MAX_SECONDS = 1e8


def clean_text(text: str) -> str:
    """Unicode NFC, whitespace runs collapsed to one space, ends stripped; lone surrogates
    (from ``\\ud800`` escapes in JSON) become ``?`` so the text can be written as UTF-8."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return " ".join(unicodedata.normalize("NFC", text).split())


def quantise_time(seconds: float) -> float:
    """Round a time to the microsecond, so that decimal times compare exactly."""
    return round(float(seconds), 6)


def decode_text_file(path: str | os.PathLike, report: Report) -> str:
    """Read a text file: UTF-8 with or without BOM, UTF-16 with BOM, else Latin-1 (reported)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read the file: {err.strerror or err}",
                        fix="check the path and its permissions") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as err:
            text = raw.decode("utf-16", errors="replace")
            line = raw[: err.start].decode("utf-16", errors="replace").count("\n") + 1
            report.add(path, f"not valid UTF-16 ({err.reason} at byte {err.start}); the bad bytes "
                             "were replaced by U+FFFD. Re-save the file as UTF-8.", line=line)
            return text
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        report.add(path, f"not valid UTF-8 ({err.reason} at byte {err.start}); read as Latin-1. "
                         "Re-save the file as UTF-8 to silence this.", line=line)
        return raw.decode("latin-1")


def detect_format(text: str, path: str | os.PathLike = "") -> str:
    """Name the transcript format of ``text`` by content, falling back to the extension."""
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0].strip()
    if first_line.startswith("WEBVTT"):
        return "vtt"
    if stripped.startswith("{") or (stripped.startswith("[") and stripped[1:].lstrip()[:1] in ("{", "]")):
        return "whisper_json"
    if first_line.replace(" ", "").lower().startswith("start\tend\ttext"):
        return "whisper_tsv"
    from maven_fast.data import transcript_formats as fmt

    head = [ln.strip() for ln in stripped.splitlines()[:20] if ln.strip()]
    if any(fmt.MAVEN_LINE.match(ln) for ln in head):
        return "maven"
    if any(fmt.CUE_TIMING.match(ln) for ln in head):
        return "srt"
    ext = Path(path).suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    raise DataError(path, "cannot tell the transcript format from its content or extension",
                    fix=f"use one of the formats {', '.join(FORMATS)} or pass format=...")


def read_transcript(path: str | os.PathLike, format: str | None = None) -> Transcript:
    """Read a transcript file into time-ordered utterances and a report of problems.

    ``format`` forces one of :data:`FORMATS`; by default it is detected from
    the content (then the extension). Raises :class:`DataError` if the file
    holds no usable utterance.
    """
    from maven_fast.data import transcript_formats as fmt

    path = str(path)
    report = Report()
    if not os.path.isfile(path):
        raise DataError(path, "transcript file not found", fix="check the path")
    text = decode_text_file(path, report).replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DataError(path, "transcript file is empty: it has no utterance",
                        fix="write the transcript again, or leave the video without one")
    if format is None:
        format = detect_format(text, path)
    if format not in FORMATS:
        raise DataError(path, f"unknown transcript format {format!r}", fix=f"use one of {FORMATS}")
    parser = fmt.PARSERS[format]
    raw = parser(text, path, report)
    utterances = _validate(raw, path, report)
    if not utterances:
        raise DataError(path, f"no utterance could be read from this {format} transcript "
                        f"({len(report)} problem(s) reported)",
                        fix=f"check that it is a {format} file; " + "; ".join(report.lines()[:3]))
    return Transcript(path=path, format=format, utterances=utterances, report=report)


def _validate(utterances: list[Utterance], path: str, report: Report) -> list[Utterance]:
    """Report and skip end < start, report empty text, sort, report overlaps."""
    kept: list[Utterance] = []
    for u in utterances:
        if not all(0.0 <= t <= MAX_SECONDS for t in (u.start, u.end)):  # also NaN
            report.add(path, f"utterance time [{u.start:g}s - {u.end:g}s] is negative, not a "
                             f"number or past {MAX_SECONDS:g}s; skipped", line=u.line)
            continue
        if u.end < u.start:
            report.add(path, f"utterance ends ({u.end:g}s) before it starts ({u.start:g}s); "
                             "skipped", line=u.line)
            continue
        if not u.text:
            report.add(path, f"utterance [{u.start:g}s - {u.end:g}s] has no text; kept with "
                             "empty text", line=u.line)
        kept.append(u)
    if any(b.start < a.start for a, b in zip(kept, kept[1:])):
        first = next(b for a, b in zip(kept, kept[1:]) if b.start < a.start)
        report.add(path, "utterances are not in time order; sorted by start time", line=first.line)
        kept.sort(key=lambda u: (u.start, u.end))
    for a, b in zip(kept, kept[1:]):
        if b.start < a.end:
            report.add(path, f"utterance [{b.start:g}s - {b.end:g}s] overlaps the previous one "
                             f"(which ends at {a.end:g}s); kept", line=b.line)
    return kept


def write_transcript(path: str | os.PathLike, utterances: list[Utterance], format: str) -> None:
    """Write utterances in one of :data:`FORMATS`, laid out as the real tools do."""
    from maven_fast.data import transcript_formats as fmt

    if format not in fmt.WRITERS:
        raise ValueError(f"unknown transcript format {format!r}; use one of {FORMATS}")
    Path(path).write_text(fmt.WRITERS[format](list(utterances)), encoding="utf-8")
