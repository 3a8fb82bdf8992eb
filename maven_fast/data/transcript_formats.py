"""Parsers and writers of the individual transcript formats.

Use :func:`maven_fast.data.read_transcript` rather than these directly: it
detects the format, decodes the file and validates the result. Each parser
takes the decoded text (``\\n`` line ends), the path (for messages) and a
:class:`~maven_fast.data.report.Report`, and returns utterances in file order
with their source line numbers.
"""
from __future__ import annotations

import html
import json
import math
import re
from typing import Callable

from maven_fast.data.report import DataError, Report
from maven_fast.data.transcripts import MAX_SECONDS, Utterance, Word, clean_text, quantise_time

_NUMBER = r"(\d+(?:\.\d*)?)"
MAVEN_LINE = re.compile(
    rf"^\[\s*{_NUMBER}\s*s?\s*-\s*{_NUMBER}\s*s?\s*\]\s*:?\s*(.*)$", re.IGNORECASE)
_CLOCK = r"(?:\d+:)?\d+:\d+(?:[.,]\d+)?"
CUE_TIMING = re.compile(rf"^\s*({_CLOCK})\s*-->\s*({_CLOCK})(?:\s.*)?$")
_CLOCK_PARTS = re.compile(r"^(?:(\d+):)?(\d+):(\d+)(?:[.,](\d+))?$")
_TAG = re.compile(r"<[^>]*>")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")
_ASS_OVERRIDE = re.compile(r"\{\\[^}]*\}")


def parse_clock(value: str) -> float:
    """``[H+:]MM:SS[,.]fff`` to seconds. Hours and minutes may exceed 99.

    Raises ValueError for text that is not a timestamp or names a time past
    :data:`~maven_fast.data.transcripts.MAX_SECONDS`.
    """
    m = _CLOCK_PARTS.match(value.strip())
    if not m:
        raise ValueError(f"not a timestamp: {value!r}")
    hours, minutes, seconds, frac = m.groups()
    if max(len(hours or ""), len(minutes), len(seconds)) > 12:  # before int(): no huge numbers
        raise ValueError(f"timestamp out of range: {value.strip()[:40]!r}")
    total = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    if total > MAX_SECONDS:
        raise ValueError(f"timestamp out of range: {value.strip()[:40]!r}")
    if frac:
        total += int(frac[:9]) / 10 ** len(frac[:9])
    return quantise_time(total)


def format_clock(seconds: float, decimal: str = ".", always_hours: bool = True) -> str:
    """Seconds to ``HH:MM:SS.mmm`` (``decimal=','`` for SRT)."""
    ms = int(round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if (always_hours or hours) else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


# --------------------------------------------------------------------- MAVEN
def parse_maven(text: str, path: str, report: Report) -> list[Utterance]:
    """``[10.5s - 15.2s]: text`` lines; other non-empty lines are reported."""
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        m = MAVEN_LINE.match(line.strip())
        if not m:
            report.add(path, f"not a '[start s - end s]: text' line, skipped: {line.strip()[:60]!r}",
                       line=lineno)
            continue
        out.append(Utterance(quantise_time(float(m.group(1))), quantise_time(float(m.group(2))),
                             clean_text(m.group(3)), line=lineno))
    return out


# ------------------------------------------------------------- SRT and WebVTT
def _blocks(text: str) -> list[list[tuple[int, str]]]:
    """Groups of consecutive non-blank lines, each line with its 1-based number."""
    blocks, current = [], []
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            current.append((lineno, line.rstrip()))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _cue_text(lines: list[str]) -> tuple[str, str | None]:
    """Join cue lines, take a WebVTT ``<v Speaker>`` voice, strip markup."""
    joined = " ".join(lines)
    voice = _VOICE.search(joined)
    speaker = clean_text(voice.group(1)) if voice else None
    plain = html.unescape(_TAG.sub("", _ASS_OVERRIDE.sub("", joined)))
    return clean_text(plain), speaker


def _parse_cues(blocks, path: str, report: Report, what: str) -> list[Utterance]:
    out = []
    for block in blocks:
        cue = None  # (lineno, start, end, text lines); start None: a cue skipped (reported)
        for i, (lineno, line) in enumerate(block):
            timing = CUE_TIMING.match(line)
            next_is_timing = i + 1 < len(block) and CUE_TIMING.match(block[i + 1][1])
            if timing:
                if cue:
                    out.extend(_finish_cue(cue))
                try:
                    cue = (lineno, parse_clock(timing.group(1)), parse_clock(timing.group(2)), [])
                except ValueError as err:
                    report.add(path, f"{err}; {what} cue skipped", line=lineno)
                    cue = (lineno, None, None, [])
            elif next_is_timing and (cue is None or line.strip().isdigit()):
                continue  # SRT index or WebVTT cue identifier
            elif cue is not None:
                cue[3].append(line)
            else:
                report.add(path, f"line outside any {what} cue (no 'start --> end' timing "
                                 f"before it), skipped: {line.strip()[:60]!r}", line=lineno)
        if cue:
            out.extend(_finish_cue(cue))
    return out


def _finish_cue(cue) -> list[Utterance]:
    lineno, start, end, lines = cue
    if start is None:
        return []
    text, speaker = _cue_text(lines)
    return [Utterance(start, end, text, speaker, line=lineno)]


def parse_srt(text: str, path: str, report: Report) -> list[Utterance]:
    """SubRip: ``index / HH:MM:SS,mmm --> HH:MM:SS,mmm / text...`` blocks."""
    return _parse_cues(_blocks(text), path, report, "SRT")


def parse_vtt(text: str, path: str, report: Report) -> list[Utterance]:
    """WebVTT: header block, then cues; NOTE, STYLE and REGION blocks are skipped."""
    blocks = _blocks(text)
    if not blocks or not blocks[0][0][1].lstrip().startswith("WEBVTT"):
        report.add(path, "WebVTT file does not start with 'WEBVTT'; read anyway", line=1)
    else:
        header = blocks.pop(0)  # "WEBVTT" plus metadata lines such as "Kind: captions"
        timing_at = next((i for i, (_, ln) in enumerate(header) if CUE_TIMING.match(ln)), None)
        if timing_at is not None:  # a cue directly under the header, without a blank line
            blocks.insert(0, header[timing_at:])
    blocks = [b for b in blocks if b[0][1].split(" ", 1)[0].split("\t", 1)[0]
              not in ("NOTE", "STYLE", "REGION")]
    return _parse_cues(blocks, path, report, "WebVTT")


# --------------------------------------------------------------------- JSON
def _array_element_lines(text: str, start: int) -> list[int]:
    """Line numbers of the elements of the JSON array that opens at ``text[start]``."""
    decoder = json.JSONDecoder()
    lines, pos = [], start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\n\r,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)


def _number(value) -> float | None:
    """A JSON number as a time, or None (not a number, NaN, infinite, or beyond a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return quantise_time(value) if math.isfinite(value) else None


def _word_time(value) -> float | None:
    t = _number(value)
    return t if t is not None and 0.0 <= t <= MAX_SECONDS else None


def _speaker(value) -> str | None:
    return None if value is None else clean_text(value if isinstance(value, str) else str(value))


def _words(raw, default_speaker) -> tuple[Word, ...]:
    if not isinstance(raw, list):
        return ()
    words = []
    for w in raw:
        if isinstance(w, dict) and isinstance(w.get("word", w.get("text")), str):
            words.append(Word(clean_text(w.get("word", w.get("text"))), _word_time(w.get("start")),
                              _word_time(w.get("end")), _speaker(w.get("speaker", default_speaker))))
    return tuple(words)


def parse_whisper_json(text: str, path: str, report: Report) -> list[Utterance]:
    """Whisper, faster-whisper and WhisperX JSON (``segments`` or a bare list).

    faster-whisper segments dumped as JSON arrays (its ``Segment`` named
    tuple: ``id, seek, start, end, text, ...``) are read too.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON: {err.msg}", line=err.lineno,
                        fix="repair the file or re-run the transcriber") from None
    except (ValueError, RecursionError) as err:  # a number of > 4300 digits; nesting too deep
        raise DataError(path, f"unreadable JSON: {type(err).__name__}: {str(err)[:80]}",
                        fix="repair the file or re-run the transcriber") from None
    if isinstance(data, dict):
        if "segments" not in data:
            raise DataError(path, "JSON transcript has no 'segments' list",
                            fix="give a Whisper/WhisperX JSON with 'segments' [{start, end, text}]")
        segments = data["segments"]
        match = re.search(r'"segments"\s*:\s*\[', text)
        array_start = match.end() - 1 if match else None
    else:
        segments = data
        array_start = text.index("[") if isinstance(data, list) else None
    if not isinstance(segments, list):
        raise DataError(path, "'segments' is not a list", fix="give a list of {start, end, text}")
    lines: list[int | None] = [None] * len(segments)
    if array_start is not None:
        try:
            found = _array_element_lines(text, array_start)
            if len(found) == len(segments):
                lines = found
        except (ValueError, RecursionError):  # line numbers are a courtesy
            pass
    out = []
    for i, (seg, lineno) in enumerate(zip(segments, lines)):
        if isinstance(seg, list) and len(seg) >= 5:  # faster-whisper Segment tuple
            seg = {"start": seg[2], "end": seg[3], "text": seg[4]}
        start = _number(seg.get("start")) if isinstance(seg, dict) else None
        end = _number(seg.get("end")) if isinstance(seg, dict) else None
        if start is None or end is None:
            report.add(path, f"segments[{i}] has no numeric 'start' and 'end', skipped", line=lineno)
            continue
        raw_text = seg.get("text")
        if raw_text is not None and not isinstance(raw_text, str):
            report.add(path, f"segments[{i}] 'text' is not a string; used its JSON form", line=lineno)
            raw_text = json.dumps(raw_text, ensure_ascii=False, default=str)
        speaker = _speaker(seg.get("speaker"))
        out.append(Utterance(start, end, clean_text(raw_text or ""), speaker,
                             _words(seg.get("words"), speaker), line=lineno))
    return out


# ---------------------------------------------------------------------- TSV
def parse_whisper_tsv(text: str, path: str, report: Report) -> list[Utterance]:
    """Whisper TSV: ``start<TAB>end<TAB>text`` in integer milliseconds, with header."""
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if lineno == 1 and line.replace(" ", "").lower().startswith("start\tend"):
            continue
        parts = line.split("\t", 2)
        try:
            start_ms, end_ms = int(parts[0].strip()), int(parts[1].strip())
        except (ValueError, IndexError):
            report.add(path, "not a 'start_ms<TAB>end_ms<TAB>text' line, skipped: "
                             f"{line.strip()[:60]!r}", line=lineno)
            continue
        if not all(abs(ms) <= MAX_SECONDS * 1000 for ms in (start_ms, end_ms)):
            report.add(path, f"time out of range (past {MAX_SECONDS:g}s), skipped: "
                             f"{line.strip()[:60]!r}", line=lineno)
            continue
        start, end = start_ms / 1000, end_ms / 1000
        out.append(Utterance(quantise_time(start), quantise_time(end),
                             clean_text(parts[2] if len(parts) > 2 else ""), line=lineno))
    return out


# ------------------------------------------------------------------ writers
def _seconds(t: float) -> str:
    """``3.125 -> '3.125'``, ``2 -> '2.0'``: millisecond precision, always a decimal point."""
    text = f"{t:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def write_maven(utterances: list[Utterance]) -> str:
    return "".join(f"[{_seconds(u.start)}s - {_seconds(u.end)}s]: {u.text}\n" for u in utterances)


def write_srt(utterances: list[Utterance]) -> str:
    return "".join(f"{i}\n{format_clock(u.start, ',')} --> {format_clock(u.end, ',')}\n{u.text}\n\n"
                   for i, u in enumerate(utterances, 1))


def write_vtt(utterances: list[Utterance]) -> str:
    cues = []
    for u in utterances:
        text = f"<v {u.speaker}>{html.escape(u.text, quote=False)}" if u.speaker \
            else html.escape(u.text, quote=False)
        cues.append(f"{format_clock(u.start)} --> {format_clock(u.end)}\n{text}\n")
    return "WEBVTT\n\n" + "\n".join(cues)


def write_whisper_json(utterances: list[Utterance]) -> str:
    segments = []
    for i, u in enumerate(utterances):
        seg = {"id": i, "seek": 0, "start": u.start, "end": u.end, "text": " " + u.text,
               "tokens": [], "temperature": 0.0, "avg_logprob": -0.25,
               "compression_ratio": 1.2, "no_speech_prob": 0.01}
        if u.speaker is not None:
            seg["speaker"] = u.speaker
        if u.words:
            seg["words"] = [{"word": w.text, "start": w.start, "end": w.end, "score": 0.9,
                             **({"speaker": w.speaker} if w.speaker else {})} for w in u.words]
        segments.append(seg)
    doc = {"text": " ".join(u.text for u in utterances), "segments": segments, "language": "en"}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_whisper_tsv(utterances: list[Utterance]) -> str:
    rows = [f"{int(round(u.start * 1000))}\t{int(round(u.end * 1000))}\t{u.text}" for u in utterances]
    return "start\tend\ttext\n" + "\n".join(rows) + "\n"


Parser = Callable[[str, str, Report], "list[Utterance]"]
PARSERS: dict[str, Parser] = {
    "maven": parse_maven, "srt": parse_srt, "vtt": parse_vtt,
    "whisper_json": parse_whisper_json, "whisper_tsv": parse_whisper_tsv,
}
WRITERS: dict[str, Callable[[list[Utterance]], str]] = {
    "maven": write_maven, "srt": write_srt, "vtt": write_vtt,
    "whisper_json": write_whisper_json, "whisper_tsv": write_whisper_tsv,
}
EXTENSIONS = {"maven": ".txt", "srt": ".srt", "vtt": ".vtt", "whisper_json": ".json",
              "whisper_tsv": ".tsv"}
