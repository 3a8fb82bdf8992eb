"""Transcript readers: every format in the real tools' layouts, and the messy cases."""
from __future__ import annotations

import json
import warnings

import pytest

from maven_fast.data import (DataError, DataWarning, Utterance, Word, read_transcript,
                             write_transcript)
from maven_fast.data.transcript_formats import format_clock, parse_clock


def write(tmp_path, name: str, text: str, encoding: str = "utf-8", newline: str = "\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def spans(transcript):
    return [(u.start, u.end, u.text) for u in transcript]


# ------------------------------------------------------------------ formats
def test_maven_format_tolerates_integer_times_missing_colon_and_spaces(tmp_path):
    path = write(tmp_path, "v.txt", "[0.0s - 2.5s]: Hello there\n"
                                    "[3s - 4.5s] no colon here\n"
                                    "[ 5.25s-6s ]:    extra    spaces  \n"
                                    "[7 - 8]: no unit\n")
    t = read_transcript(path)
    assert t.format == "maven"
    assert spans(t) == [(0.0, 2.5, "Hello there"), (3.0, 4.5, "no colon here"),
                        (5.25, 6.0, "extra spaces"), (7.0, 8.0, "no unit")]
    assert [u.line for u in t] == [1, 2, 3, 4]
    assert not t.report


def test_srt_as_written_by_subtitle_tools(tmp_path):
    srt = ("1\n00:00:01,000 --> 00:00:03,500\nI was really\n<i>surprised</i>\n\n"
           "2\n00:00:04,200 --> 00:00:06,000 X1:40 X2:600 Y1:20 Y2:50\n{\\an8}Second line\n\n"
           "3\n01:02:03,004 --> 01:02:05,000\nlate\n")
    t = read_transcript(write(tmp_path, "v.srt", srt))
    assert t.format == "srt"
    assert spans(t) == [(1.0, 3.5, "I was really surprised"), (4.2, 6.0, "Second line"),
                        (3723.004, 3725.0, "late")]
    assert [u.line for u in t] == [2, 7, 11]  # the timing lines


def test_webvtt_with_header_notes_styles_ids_voices_and_no_hours(tmp_path):
    vtt = ("WEBVTT - some title\nKind: captions\nLanguage: en\n\n"
           "STYLE\n::cue { color: yellow }\n\n"
           "NOTE this is a comment\nspanning two lines\n\n"
           "intro\n00:01.000 --> 00:02.500 align:start position:10%\n<v Roger Bingham>We are in New York City</v>\n\n"
           "00:00:03.000 --> 00:00:04.000\n<c.loud>Caf&eacute; &amp; <b>bar</b></c>\n")
    t = read_transcript(write(tmp_path, "v.vtt", vtt))
    assert t.format == "vtt"
    assert spans(t) == [(1.0, 2.5, "We are in New York City"), (3.0, 4.0, "Café & bar")]
    assert t[0].speaker == "Roger Bingham" and t[1].speaker is None


def test_openai_whisper_json(tmp_path):
    doc = {"text": " Hello there. How are you?", "language": "en", "segments": [
        {"id": 0, "seek": 0, "start": 0.0, "end": 2.24, "text": " Hello there.",
         "tokens": [50364, 2425, 456, 13], "temperature": 0.0, "avg_logprob": -0.31,
         "compression_ratio": 0.9, "no_speech_prob": 0.02},
        {"id": 1, "seek": 0, "start": 2.24, "end": 3.9000000000000004, "text": " How are you?",
         "tokens": [1012, 366, 291, 30], "temperature": 0.0, "avg_logprob": -0.31,
         "compression_ratio": 0.9, "no_speech_prob": 0.02}]}
    path = write(tmp_path, "v.json", json.dumps(doc, indent=2))
    t = read_transcript(path)
    assert t.format == "whisper_json"
    assert spans(t) == [(0.0, 2.24, "Hello there."), (2.24, 3.9, "How are you?")]
    lines = path.read_text().split("\n")
    assert lines[t[1].line - 1].strip() == "{"  # the line where segment 1 opens


def test_faster_whisper_json_as_dicts_and_as_tuples(tmp_path):
    dicts = [{"id": 1, "seek": 0, "start": 0.5, "end": 1.5, "text": " one", "tokens": [1],
              "avg_logprob": -0.1, "compression_ratio": 1.0, "no_speech_prob": 0.0,
              "words": None, "temperature": 0.0}]
    tuples = [[1, 0, 0.5, 1.5, " one", [1], -0.1, 1.0, 0.0, None, 0.0],
              [2, 0, 2.0, 3.0, " two", [2], -0.1, 1.0, 0.0, None, 0.0]]
    assert spans(read_transcript(write(tmp_path, "a.json", json.dumps(dicts)))) == [(0.5, 1.5, "one")]
    assert spans(read_transcript(write(tmp_path, "b.json", json.dumps(tuples)))) == \
        [(0.5, 1.5, "one"), (2.0, 3.0, "two")]


def test_whisperx_json_keeps_speakers_and_words(tmp_path):
    doc = {"segments": [
        {"start": 0.031, "end": 1.2, "text": " Hi Bob.", "speaker": "SPEAKER_00",
         "words": [{"word": "Hi", "start": 0.031, "end": 0.4, "score": 0.91, "speaker": "SPEAKER_00"},
                   {"word": "Bob.", "start": 0.5, "end": 1.2, "score": 0.88, "speaker": "SPEAKER_00"}]},
        {"start": 1.5, "end": 2.0, "text": " 2024 yes", "speaker": "SPEAKER_01",
         "words": [{"word": "2024"}, {"word": "yes", "start": 1.8, "end": 2.0, "score": 0.7}]}],
        "word_segments": [{"word": "Hi", "start": 0.031, "end": 0.4}]}
    t = read_transcript(write(tmp_path, "x.json", json.dumps(doc)))
    assert [u.speaker for u in t] == ["SPEAKER_00", "SPEAKER_01"]
    assert t[0].words == (Word("Hi", 0.031, 0.4, "SPEAKER_00"), Word("Bob.", 0.5, 1.2, "SPEAKER_00"))
    assert t[1].words[0] == Word("2024", None, None, "SPEAKER_01")  # unaligned word kept


def test_whisper_tsv_in_milliseconds(tmp_path):
    t = read_transcript(write(tmp_path, "v.tsv", "start\tend\ttext\n0\t2240\tHello there.\n"
                                                 "2240\t3900\tHow are you?\n"))
    assert t.format == "whisper_tsv"
    assert spans(t) == [(0.0, 2.24, "Hello there."), (2.24, 3.9, "How are you?")]


# --------------------------------------------------------------- edge cases
def test_bom_crlf_empty_lines_and_unicode(tmp_path):
    text = "\n\n1\n00:00:00,500 --> 00:00:01,000\nnaïve café — 你好 😀\n\n\n\n2\n00:00:02,000 --> 00:00:03,000\nÅngström\n\n"
    path = write(tmp_path, "v.srt", "\ufeff" + text, newline="\r\n")
    t = read_transcript(path)
    assert spans(t) == [(0.5, 1.0, "naïve café — 你好 😀"), (2.0, 3.0, "Ångström")]
    assert not t.report
    utf16 = write(tmp_path, "w.txt", "\ufeff[1s - 2s]: ünïcödé\r\n", encoding="utf-16-le")
    assert spans(read_transcript(utf16)) == [(1.0, 2.0, "ünïcödé")]


def test_unicode_is_normalised_to_nfc(tmp_path):
    t = read_transcript(write(tmp_path, "v.txt", "[0s - 1s]: cafe\u0301\n"))
    assert t[0].text == "caf\u00e9"


def test_times_beyond_99_minutes_and_hours(tmp_path):
    vtt = "WEBVTT\n\n100:00.000 --> 100:01.500\nminutes past 99\n\n101:00:00.250 --> 101:00:01.000\nhours past 99\n"
    assert spans(read_transcript(write(tmp_path, "v.vtt", vtt))) == \
        [(6000.0, 6001.5, "minutes past 99"), (363600.25, 363601.0, "hours past 99")]
    srt = "1\n01:40:00,000 --> 01:40:02,000\nat 100 minutes\n"
    assert spans(read_transcript(write(tmp_path, "v.srt", srt))) == [(6000.0, 6002.0, "at 100 minutes")]
    assert spans(read_transcript(write(tmp_path, "m.txt", "[6000.5s - 6010.25s]: late\n"))) == \
        [(6000.5, 6010.25, "late")]
    assert parse_clock("100:00.000") == 6000.0 and format_clock(6000.0) == "01:40:00.000"


def test_missing_text_is_kept_and_reported(tmp_path):
    srt = "1\n00:00:01,000 --> 00:00:02,000\n\n2\n00:00:03,000 --> 00:00:04,000\nsecond\n"
    with pytest.warns(DataWarning, match=r"v\.srt:2: .*no text"):
        t = read_transcript(write(tmp_path, "v.srt", srt))
    assert spans(t) == [(1.0, 2.0, ""), (3.0, 4.0, "second")]
    assert len(t.report) == 1 and t.report.issues[0].line == 2
    with pytest.warns(DataWarning, match="no text"):
        assert spans(read_transcript(write(tmp_path, "v.txt", "[1s - 2s]:\n[2s-3s] x\n")))[0] == (1.0, 2.0, "")


def test_malformed_lines_are_reported_with_file_and_line_never_dropped_silently(tmp_path):
    path = write(tmp_path, "v.txt", "[0s - 1s]: ok\nthis is not a timed line\n\n[2s - 3s]: fine\n[oops]\n")
    with pytest.warns(DataWarning) as caught:
        t = read_transcript(path)
    assert spans(t) == [(0.0, 1.0, "ok"), (2.0, 3.0, "fine")]
    assert [i.line for i in t.report] == [2, 5]
    assert all(str(path) in i.path for i in t.report)
    assert len(caught) == 2 and f"{path}:2:" in str(caught[0].message)
    tsv = write(tmp_path, "v.tsv", "start\tend\ttext\n0\t1000\tok\nabc\t2000\tbad\n")
    with pytest.warns(DataWarning, match=r"v\.tsv:3:"):
        assert len(read_transcript(tsv)) == 1
    srt = write(tmp_path, "o.srt", "stray text before any cue\n\n1\n00:00:01,000 --> 00:00:02,000\nok\n")
    with pytest.warns(DataWarning, match=r"o\.srt:1: line outside any SRT cue"):
        assert len(read_transcript(srt)) == 1


def test_end_before_start_unsorted_and_overlapping(tmp_path):
    path = write(tmp_path, "v.txt", "[5s - 6s]: third\n[4s - 3s]: backwards\n[0s - 2s]: first\n"
                                    "[1.5s - 4s]: overlaps\n")
    with pytest.warns(DataWarning):
        t = read_transcript(path)
    assert spans(t) == [(0.0, 2.0, "first"), (1.5, 4.0, "overlaps"), (5.0, 6.0, "third")]
    messages = [(i.line, i.message) for i in t.report]
    assert messages[0][0] == 2 and "ends" in messages[0][1] and "skipped" in messages[0][1]
    assert any("not in time order" in m for _, m in messages)
    assert any(line == 4 and "overlaps" in m for line, m in messages)


def test_whisper_json_bad_segments_reported_with_line(tmp_path):
    doc = '{"segments": [\n {"start": 0, "end": 1, "text": "ok"},\n {"start": "x", "end": 2, "text": "bad"}\n]}'
    with pytest.warns(DataWarning, match=r"v\.json:3: segments\[1\]"):
        t = read_transcript(write(tmp_path, "v.json", doc))
    assert spans(t) == [(0.0, 1.0, "ok")]


def test_files_without_any_utterance_are_errors_naming_the_file(tmp_path):
    for name, text in [("empty.txt", ""), ("blank.srt", "\n\n  \n"), ("junk.txt", "no timestamps at all\n"),
                       ("none.json", '{"segments": []}'), ("hdr.tsv", "start\tend\ttext\n")]:
        path = write(tmp_path, name, text)
        with pytest.raises(DataError) as err, warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            read_transcript(path)
        assert str(path) in str(err.value)
    with pytest.raises(DataError, match=r"bad\.json:2: invalid JSON"):
        read_transcript(write(tmp_path, "bad.json", '{"segments":\n [,]}'))
    with pytest.raises(DataError, match="no 'segments'"):
        read_transcript(write(tmp_path, "nos.json", '{"text": "hi"}'))
    with pytest.raises(DataError, match="not found"):
        read_transcript(tmp_path / "missing.srt")


def test_format_chosen_by_content_before_extension(tmp_path):
    srt_in_txt = write(tmp_path, "v.txt", "1\n00:00:01,000 --> 00:00:02,000\nhi\n")
    assert read_transcript(srt_in_txt).format == "srt"
    vtt_in_txt = write(tmp_path, "w.txt", "WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n")
    assert read_transcript(vtt_in_txt).format == "vtt"
    with pytest.raises(DataError, match="cannot tell the transcript format"):
        read_transcript(write(tmp_path, "v.dat", "just words\n"))
    assert read_transcript(srt_in_txt, format="srt").format == "srt"


def test_latin1_file_is_read_and_reported(tmp_path):
    path = write(tmp_path, "v.txt", "[0s - 1s]: caf\u00e9\n", encoding="latin-1")
    with pytest.warns(DataWarning, match="not valid UTF-8"):
        t = read_transcript(path)
    assert t[0].text == "café"


@pytest.mark.parametrize("fmt", ["maven", "srt", "vtt", "whisper_json", "whisper_tsv"])
def test_writer_round_trips(tmp_path, fmt):
    utterances = [Utterance(0.25, 1.5, "héllo wörld", "A"), Utterance(1.5, 3.125, "second one", "B"),
                  Utterance(3600.5, 3602.0, "an hour & more", "A")]
    path = tmp_path / f"t.{fmt}"
    write_transcript(path, utterances, fmt)
    t = read_transcript(path)
    assert t.format == fmt and not t.report
    assert spans(t) == [(u.start, u.end, u.text) for u in utterances]
    if fmt in ("vtt", "whisper_json"):
        assert [u.speaker for u in t] == ["A", "B", "A"]
