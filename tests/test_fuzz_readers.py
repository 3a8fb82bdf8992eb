"""Fuzz every reader of outside input for a bounded time (tests/_fuzz.py: the engine).

Each target draws inputs from mutations of valid files (bytes, lines, tokens,
encodings; JSON/YAML trees with wrong types, huge or negative numbers, deep
nesting) and raw bytes, feeds them to a reader and asserts that the reader
returned a valid parse (its invariants checked) or raised the documented
error naming the file (and the line, where there is one): DataError for data
files, ConfigError for configs, CheckpointError for checkpoints. Anything
else, or an input that takes longer than the deadline, fails the test with
the shrunk input.

Budget: MAVEN_FAST_FUZZ_SECONDS (default 60) for all targets together, shared
by the weights below. A longer run:

    MAVEN_FAST_FUZZ_SECONDS=600 bash scripts/test.sh tests/test_fuzz_readers.py

Inputs per target and inputs/s are printed at the end of the module.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import string
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import strategies as st

import _fuzz
from _fuzz import TOTAL_SECONDS, Stats, file_bytes, fuzz, mutated, mutated_tree, TOKENS
from maven_fast.config import ConfigError, FlowDepthBoundedLoader, MavenConfig, yaml_location
from maven_fast.data import cache_format as cf
from maven_fast.data.annotations import read_va_annotations
from maven_fast.data.affwild2 import build_split
from maven_fast.data.frames import FrameFolder, frame_number
from maven_fast.data.report import DataError, DataWarning, Report
from maven_fast.data.submission import read_frame_list, read_name_list, read_submission
from maven_fast.data.transcript_formats import CUE_TIMING, EXTENSIONS, WRITERS
from maven_fast.data.transcripts import FORMATS, Utterance, Word, decode_text_file, read_transcript
from maven_fast.train.checkpoint import CheckpointError
from maven_fast.train.config import TrainConfig

#: Share of the budget per target (they add up to 1).
WEIGHTS = {
    **{f"transcript_{f}": 0.065 for f in FORMATS},
    "annotations": 0.06, "frame_folder": 0.05, "frame_lists": 0.07, "affwild2_split": 0.08,
    "yaml_config": 0.145, "cache_index": 0.09, "shard_header": 0.07, "checkpoint": 0.11,
}
assert abs(sum(WEIGHTS.values()) - 1) < 1e-9

STATS: list[Stats] = []


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    _fuzz.HANG_STREAM = _fuzz.terminal_stderr(request.config)
    yield
    if _fuzz.HANG_STREAM is not None:
        _fuzz.HANG_STREAM.close()
        _fuzz.HANG_STREAM = None
    if not STATS:
        return
    total = sum(s.inputs for s in STATS)
    seconds = sum(s.seconds for s in STATS)
    lines = ["", f"fuzz targets (MAVEN_FAST_FUZZ_SECONDS={TOTAL_SECONDS:g}):", *(s.line() for s in STATS),
             f"{'total':<22} {total:>7} inputs in {seconds:6.2f} s: {total / max(seconds, 1e-9):8.1f} inputs/s"]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        for line in lines:
            (reporter.write_line if reporter else print)(line)


def run(name: str, strategy, check) -> None:
    """Fuzz one target for its share of the budget, less what the targets before it ran over
    (so the module stays near MAVEN_FAST_FUZZ_SECONDS on a busy machine), at least 30 % of it."""
    share = TOTAL_SECONDS * WEIGHTS[name]
    planned = sum(TOTAL_SECONDS * WEIGHTS[s.name] for s in STATS) + share
    used = sum(s.seconds for s in STATS)
    STATS.append(fuzz(name, strategy, check, max(0.3 * share, planned - used)))


@contextlib.contextmanager
def quiet():
    """Reported problems are DataWarnings: expected here, so not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        yield


def decoded_lines(path: Path) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        text = decode_text_file(path, Report())
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def assert_data_error(err: DataError, path: Path | str, nlines: int | None = None) -> None:
    """The documented error: it names the file (its ``path`` and the start of its message)
    and, when it gives a line, one that exists."""
    assert err.path == str(path), (err.path, str(path))
    assert str(err).startswith(str(path)), str(err)
    if err.line is not None:
        assert err.line >= 1 and (nlines is None or err.line <= nlines), (err.line, nlines, str(err))
        assert str(err).startswith(f"{path}:{err.line}:"), str(err)


def valid_unicode(s) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ====================================================================== transcripts
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=24)
_utterance = st.builds(
    lambda s, d, t, sp, w: Utterance(s / 1000, (s + d) / 1000, t, sp,
                                     tuple(Word(x, s / 1000, (s + d) / 1000) for x in w)),
    st.integers(0, 10**7), st.integers(0, 10**5), _text,
    st.one_of(st.none(), st.text(string.ascii_letters, min_size=1, max_size=6)),
    st.lists(st.text(string.ascii_letters, min_size=1, max_size=5), max_size=2))


def _transcript_files(fmt: str):
    valid = st.lists(_utterance, min_size=1, max_size=6).map(lambda us: WRITERS[fmt](us).encode("utf-8"))
    if fmt != "whisper_json":
        return file_bytes(valid)
    trees = st.one_of(
        valid.map(lambda b: json.loads(b)),
        valid.map(lambda b: json.loads(b)["segments"]),  # a bare list
        valid.map(lambda b: [[s["id"], 0, s["start"], s["end"], s["text"]]  # faster-whisper tuples
                             for s in json.loads(b)["segments"]]))
    as_json = mutated_tree(trees).map(lambda t: json.dumps(t, ensure_ascii=False).encode("utf-8",
                                                                                         "surrogatepass"))
    return st.one_of(file_bytes(valid), mutated(as_json, 2), as_json)


def _check_transcript(fmt: str, root: Path):
    def check(args):
        data, force, suffix = args
        path = root / f"transcript{suffix}"
        path.write_bytes(data)
        try:
            with quiet():
                t = read_transcript(path, format=fmt if force else None)
        except DataError as err:
            assert_data_error(err, path, len(decoded_lines(path)))
            return
        lines = decoded_lines(path)
        assert t.format in FORMATS and t.utterances
        starts = [u.start for u in t.utterances]
        assert starts == sorted(starts)
        for u in t.utterances:
            assert math.isfinite(u.start) and math.isfinite(u.end) and 0 <= u.start <= u.end, u
            assert isinstance(u.text, str) and valid_unicode(u.text), u
            assert u.speaker is None or (isinstance(u.speaker, str) and valid_unicode(u.speaker)), u
            for w in u.words:
                assert isinstance(w.text, str) and valid_unicode(w.text), w
                assert w.speaker is None or (isinstance(w.speaker, str) and valid_unicode(w.speaker)), w
                for x in (w.start, w.end):
                    assert x is None or (math.isfinite(x) and x >= 0), w
            assert u.line is None or 1 <= u.line <= len(lines), (u.line, len(lines))
            if u.line is not None and t.format in ("srt", "vtt"):
                assert CUE_TIMING.match(lines[u.line - 1]), (u.line, lines[u.line - 1])
        for issue in t.report:
            assert issue.path == str(path) and (issue.line is None or 1 <= issue.line <= len(lines)), issue
        if t.format in ("maven", "whisper_tsv"):
            # No line is dropped silently: each non-empty line gave an utterance or was reported.
            covered = {u.line for u in t.utterances} | {i.line for i in t.report}
            for lineno, line in enumerate(lines, 1):
                header = t.format == "whisper_tsv" and lineno == 1 and \
                    line.replace(" ", "").lower().startswith("start\tend")
                if line.strip() and not header:
                    assert lineno in covered, (lineno, line[:80])
    return check


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_transcript(fmt, tmp_path):
    strategy = st.tuples(_transcript_files(fmt), st.booleans(),
                         st.sampled_from([EXTENSIONS[fmt], EXTENSIONS[fmt], ".dat", ""]))
    run(f"transcript_{fmt}", strategy, _check_transcript(fmt, tmp_path))


# ====================================================================== annotations
_va = st.one_of(st.just("-5,-5"), st.just("-5,0.3"),
                st.tuples(st.floats(-1, 1), st.floats(-1, 1)).map(lambda p: f"{p[0]:.6g},{p[1]:.6g}"))
_annotation_file = st.lists(_va, max_size=40).map(lambda rows: ("valence,arousal\n" + "\n".join(rows) + "\n")
                                                   .encode())


def test_fuzz_annotations(tmp_path):
    path = tmp_path / "person.txt"

    def check(data):
        path.write_bytes(data)
        report = Report()
        try:
            with quiet():
                values, valid = read_va_annotations(path, report=report)
        except DataError as err:
            assert_data_error(err, path, len(decoded_lines(path)))
            assert err.line == 1  # only the header can make the file unusable
            return
        lines = decoded_lines(path)
        while lines and not lines[-1].strip():
            lines.pop()
        rows = lines[1:]
        assert values.dtype == torch.float32 and valid.dtype == torch.bool
        assert values.shape == (len(rows), 2) and valid.shape == (len(rows),)
        assert torch.isfinite(values).all() and (values.abs() <= 1).all()
        assert (values[~valid] == 0).all()
        # every masked frame is -5 (the convention, not reported) or reported with its line
        reported = set()
        for issue in report:
            assert issue.path == str(path)
            m = re.search(r"lines ([\d, ]+)", issue.message)
            # "... lines 2, 3, 4, ... (12 in all)": the listed ones (a short list names all)
            reported |= {int(x) for x in re.findall(r"\d+", m.group(1))} \
                if m and "malformed" in issue.message else {issue.line}
            if "malformed" in issue.message:
                n = int(issue.message.split()[0])
                assert n == sum(1 for r in rows if _pair(r) is None), (issue.message, rows)
        for i, row in enumerate(rows):
            if not valid[i] and "-5" not in [p.strip() for p in row.split(",")] \
                    and _pair(row) is not None and -5.0 not in _pair(row):
                assert i + 2 in reported, (i + 2, row)
    run("annotations", file_bytes(_annotation_file), check)


def _pair(row: str):
    parts = row.strip().split(",")
    if len(parts) != 2:
        return None
    try:
        pair = (float(parts[0]), float(parts[1]))
    except ValueError:
        return None
    return pair if all(math.isfinite(v) for v in pair) else None


# ====================================================================== frame folders
def _fs_ok(name: str) -> bool:
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        return False
    return 0 < len(encoded) <= 200 and b"/" not in encoded and b"\x00" not in encoded \
        and name not in (".", "..")


_frame_name = st.one_of(
    st.integers(0, 100_000).map(lambda n: f"{n:05d}.jpg"),
    st.integers(0, 100_000).map(lambda n: f"{n}.{'PNG' if n % 2 else 'jpeg'}"),
    st.integers(1, 240).map(lambda k: "9" * k + ".jpg"),
    st.integers(1, 240).map(lambda k: "0" * k + "1.jpg"),
    st.sampled_from(["\u0661\u0662.jpg", "\uff11.jpg", "-1.jpg", "+1.jpg", " 1.jpg", "1.jpg ", "1.JPG",
                     ".00001.jpg", "00001.jpg.tmp", "1.gif", "notes.txt", "1_000.jpg"]),
    st.text(max_size=20).filter(_fs_ok),
).filter(_fs_ok)


def test_fuzz_frame_folder(tmp_path):
    def check(args):
        names, dirs = args
        folder = tmp_path / "frames"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for i, name in enumerate(names):
            p = folder / name
            if p.exists():
                continue
            if i in dirs:
                p.mkdir()
            else:
                p.write_bytes(b"")
        report = Report()
        try:
            with quiet():
                ff = FrameFolder(folder, report=report)
        except DataError as err:
            assert_data_error(err, folder)
            return
        numbers = [int(n) for n in ff.numbers]
        assert numbers == sorted(set(numbers)) and numbers[0] >= 1
        assert ff.num_frames == numbers[-1] and ff.num_missing == ff.num_frames - len(numbers)
        assert all(i.path == str(folder) for i in report)
        listed = set(os.listdir(folder))
        taken = {os.path.basename(ff.image_path(n - 1)) for n in numbers}
        assert taken <= listed
        stray = [n for n in listed if not n.startswith(".") and n not in taken
                 and frame_number(n) not in ff.numbers]
        assert not stray or any("not numbered frame images" in i.message for i in report), stray
        n = min(ff.num_frames, 20)
        present = ff.present(0, n)
        assert present.tolist() == [i + 1 in numbers for i in range(n)]
        for i in range(n):
            assert ff.nearest_present(i) + 1 in numbers
        try:
            ff.read(0, 1)  # the files are empty or folders: not images
        except DataError as err:
            assert err.path.startswith(str(folder)) and str(err).startswith(err.path)
    run("frame_folder", st.tuples(st.lists(_frame_name, min_size=0, max_size=12),
                                  st.sets(st.integers(0, 11), max_size=2)), check)


# ====================================================================== frame lists, name lists, submissions
_location = st.tuples(st.sampled_from(["a", "vid_left", "12-34-56x78", "x y", "b\\c"]),
                      st.integers(0, 99_999)).map(lambda t: f"{t[0]}/{t[1]:05d}.jpg")
_frame_list_file = st.tuples(st.booleans(), st.lists(_location, max_size=20), st.booleans()).map(
    lambda t: (("image_location,valence,arousal\n" if t[0] else "")
               + "".join(f"{loc},0.1,-0.2\n" if t[2] else f"{loc}\n" for loc in t[1])).encode())


def test_fuzz_frame_lists(tmp_path):
    path = tmp_path / "list.csv"

    def check(data):
        path.write_bytes(data)
        nlines = data.count(b"\n") + data.count(b"\r") + 1
        for reader in (read_frame_list, read_name_list, read_submission):
            try:
                with quiet():
                    out = reader(path)
            except DataError as err:
                assert_data_error(err, path, nlines)
                continue
            if reader is read_frame_list:
                assert out and all(isinstance(x, str) and valid_unicode(x) for x in out)
                assert all(re.match(r"^.+/\d+\.(jpe?g|png)$", x, re.I) for x in out), out
            elif reader is read_name_list:
                assert out and all(isinstance(x, str) and x and valid_unicode(x) for x in out)
                assert len(set(out)) == len(out)
            else:
                for name, (frames, values) in out.items():
                    assert isinstance(name, str) and valid_unicode(name)
                    assert frames.dtype == np.int64 and (frames >= 0).all()
                    assert values.dtype == np.float32 and values.shape == (len(frames), 2)
    run("frame_lists", file_bytes(_frame_list_file), check)


# ====================================================================== an Aff-Wild2 split
_person = st.sampled_from(["p1", "vid_left", "vid_right", "x_left_right", "e\u0301", "12-24-1920x1080"])


def test_fuzz_affwild2_split(tmp_path):
    """Annotation files, crop folders and transcripts of several people together (no video
    files: fps and frame count come from the annotations or the crop folders)."""
    transcripts = st.one_of(*[st.tuples(st.just(f), _transcript_files(f)) for f in FORMATS])

    def check(args):
        people, mode, tail = args
        root = tmp_path / "root"
        shutil.rmtree(root, ignore_errors=True)
        ann_dir = root / "VA_Estimation_Challenge" / "Train_Set"
        ann_dir.mkdir(parents=True)
        (root / "transcripts").mkdir()
        (root / "cropped_aligned").mkdir()
        for name, annotation, frames, transcript, by_video in people:
            if annotation is not None:
                (ann_dir / f"{name}.txt").write_bytes(annotation)
            if frames:
                (root / "cropped_aligned" / name).mkdir(exist_ok=True)
                for n in frames:
                    (root / "cropped_aligned" / name / f"{n:05d}.jpg").write_bytes(b"")
            if transcript is not None:
                fmt, data = transcript
                stem = name.rsplit("_", 1)[0] if by_video and "_" in name else name
                (root / "transcripts" / f"{stem}{EXTENSIONS[fmt]}").write_bytes(data)
        names = sorted({p[0] for p in people if p[1] is not None})
        try:
            with quiet():
                index = build_split(root, "train", mode=mode, tail=tail)
        except DataError as err:
            assert not names and err.path.startswith(str(root))
            return
        assert sorted([e.name for e in index.videos] + list(index.failed)) == names
        for entry in index.videos:
            assert entry.num_frames >= 0 and entry.fps == Fraction(30)
            prev_stop = 0
            for seg in index.segments[entry.name]:
                assert 0 <= seg.frame_start <= seg.frame_stop <= entry.num_frames, seg
                assert 0 <= seg.sample_start <= seg.sample_stop, seg
                assert math.isfinite(seg.start) and math.isfinite(seg.end), seg
                if mode == "contiguous":
                    assert seg.frame_start >= prev_stop, seg
                prev_stop = seg.frame_stop
            try:
                with quiet():
                    values, valid = entry.labels()
            except DataError as err:
                assert_data_error(err, entry.annotation_path)
                continue
            assert values.shape == (entry.num_frames, 2) and valid.shape == (entry.num_frames,)
    person = st.tuples(_person, st.one_of(st.none(), file_bytes(_annotation_file, 2)),
                       st.lists(st.integers(0, 60), max_size=4),
                       st.one_of(st.none(), transcripts), st.booleans())
    run("affwild2_split", st.tuples(st.lists(person, max_size=3), st.sampled_from(["contiguous", "exact"]),
                                    st.booleans()), check)


# ====================================================================== YAML configs and overrides
def _dotted(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _dotted(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


_DOTTED = sorted(_dotted(TrainConfig().to_dict()))
_override = st.one_of(
    st.tuples(st.sampled_from(_DOTTED + ["model", "model.preset", "run", "nope.x", "", "run..epochs"]),
              st.one_of(st.sampled_from(TOKENS + ["paper", "reference_mlp", "[1, 2]", "{a: 1}", "[",
                                                  "'unterminated", "0", "true", "1e-3"]),
                        st.text(max_size=10))).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20),
)


def _train_yaml():
    def dump(tree):
        try:
            return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True).encode("utf-8", "surrogatepass")
        except (yaml.YAMLError, RecursionError, UnicodeEncodeError):
            return json.dumps(tree, default=str).encode("utf-8", "surrogatepass")

    base = st.sampled_from(["paper", "reference_mlp", "reference_beit", None]).map(_train_dict)
    # Repeats kept short: PyYAML parses ~20k lines/s here, and configs are small files.
    return file_bytes(mutated_tree(base).map(dump), max_repeat=40)


def _train_dict(preset):
    d = TrainConfig().to_dict()
    if preset is not None:
        d["model"] = preset
    return d


def test_fuzz_yaml_config(tmp_path):
    path = tmp_path / "config.yaml"

    def check(args):
        data, overrides = args
        path.write_bytes(data)

        def node():
            return yaml.compose(data.decode("utf-8-sig"), Loader=FlowDepthBoundedLoader)
        try:
            text = data.decode("utf-8-sig")
            syntax = None
            try:  # PyYAML plus the reader's documented depth limit (else the oracle spends PyYAML's
                # quadratic time on '[[[[...' itself: 0.9 s at 2,000 levels, CI 2026-12-04)
                yaml.load(text, Loader=FlowDepthBoundedLoader)
            except yaml.YAMLError as err:
                syntax = err
            except (RecursionError, ValueError, TypeError, OverflowError) as err:  # deep; 2024-13-01
                syntax = repr(err)
        except UnicodeDecodeError:
            text, syntax = None, "encoding"
        try:
            cfg = TrainConfig.load(path, overrides)
        except ConfigError as err:
            msg = str(err)
            assert "\n" not in msg, msg  # one line
            assert msg.startswith(f"{path}:") or msg.startswith("override "), msg
            if err.key and not msg.startswith("override ") and yaml_location(node(), err.key):
                assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", msg), msg  # the key's place
            if syntax is not None:
                assert msg.startswith(f"{path}:"), msg
                mark = getattr(syntax, "problem_mark", None) or getattr(syntax, "context_mark", None)
                if mark is not None:
                    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", msg), msg
        else:
            assert syntax is None, syntax
            assert isinstance(cfg.model, MavenConfig)
            cfg.model.validate()
            again = TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
            assert again.to_yaml() == cfg.to_yaml()
        if text is not None:  # the same text as a model config (read_config reads such text)
            try:
                MavenConfig.from_yaml(text)
            except ConfigError as err:
                assert "\n" not in str(err), str(err)
    run("yaml_config", st.tuples(_train_yaml(), st.lists(_override, max_size=3)), check)


# ====================================================================== the feature cache: index and shards
SIGNATURE = {"video": {"name": "v", "dim": 4}, "audio": {"name": "a", "dim": 3},
             "text": {"name": "t", "dim": 3}}


def _write_shard(path: Path, name: str, lengths: list[int], metadata_edit=None) -> None:
    """A shard laid out as extract writes it: segments of ``lengths`` frames."""
    from safetensors.torch import save_file

    from maven_fast.data.affwild2 import VideoEntry
    from maven_fast.data.segmentation import Segment

    tensors, segments, frame = {}, [], 0
    for i, n in enumerate(lengths):
        k = f"{i:04d}"
        seg = Segment(i, frame / 30, (frame + n) / 30, f"text {i}", frame, frame + n,
                      frame * 533, (frame + n) * 533)
        tensors.update({f"{k}/video": torch.randn(n, 4), f"{k}/labels": torch.rand(n, 2) * 2 - 1,
                        f"{k}/label_valid": torch.ones(n, dtype=torch.bool),
                        f"{k}/present": torch.ones(n, dtype=torch.bool),
                        f"{k}/mask": torch.ones(n, dtype=torch.bool),
                        f"{k}/frames": torch.arange(frame + 1, frame + n + 1),
                        f"{k}/audio": torch.randn(n + 1, 3), f"{k}/audio_pooled": torch.randn(3),
                        f"{k}/text": torch.randn(2, 3), f"{k}/text_pooled": torch.randn(3)})
        segments.append({**seg.to_dict(), "key": k, "num_audio_frames": n + 1, "num_text_tokens": 2})
        frame += n
    entry = VideoEntry(name, name, "train", Fraction(30), frame)
    meta = {"format": cf.CACHE_FORMAT, "signature": SIGNATURE, "settings": {"mode": "contiguous"},
            "entry": entry.to_dict(), "segments": segments, "skipped_segments": [], "issues": []}
    if metadata_edit is not None:
        meta = metadata_edit(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    # (a lone surrogate has no UTF-8 form, so no file holds one: its escaped form stands in)
    save_file(tensors, str(path), metadata={k: v.encode("utf-8", "backslashreplace").decode()
                                            if k == "format" and isinstance(v, str) else
                                            json.dumps(v) for k, v in meta.items()})


def _make_cache(root: Path) -> dict:
    from maven_fast.data.extract import PlannedVideo, write_index_if_complete

    shutil.rmtree(root, ignore_errors=True)
    cf.write_json_atomic(root / cf.META_FILE, {"format": cf.CACHE_FORMAT, "signature": SIGNATURE,
                                               "settings": {"mode": "contiguous"}})
    _write_shard(cf.shard_path(root, "train", "p1"), "p1", [3, 5])
    _write_shard(cf.shard_path(root, "train", "p2"), "p2", [4])
    cf.write_json_atomic(cf.failure_path(root, "train", "p3"), {"name": "p3", "split": "train",
                                                                "reason": "x"})
    plan = [PlannedVideo("train", n) for n in ("p1", "p2", "p3")]
    assert write_index_if_complete(root, plan)
    return cf.read_json(root / cf.INDEX_FILE)


def _check_dataset(cache: Path, pooled: bool, max_frames, split: str = "train"):
    """FeatureCacheDataset on ``cache``: every item readable and shaped, or DataError naming
    the index or a shard."""
    from maven_fast.data import FeatureCacheDataset, collate_segments

    index = cache / cf.INDEX_FILE
    try:
        ds = FeatureCacheDataset(cache, split, pooled=pooled, max_frames=max_frames)
        items = [ds[i] for i in range(min(len(ds), 50))]
    except DataError as err:
        assert err.path == str(index) or err.path.startswith(str(cache)), err.path
        assert str(err).startswith(err.path), str(err)
        return None
    assert isinstance(ds.signature, dict) and isinstance(ds.failed, list)
    for item in items:
        n = item["video"].shape[0]
        assert item["video"].ndim == 2 and item["labels"].shape == (n, 2)
        assert item["mask"].shape == (n,) and item["frames"].shape == (n,)
        assert max_frames is None or n <= max_frames
        assert item["audio"].ndim == (1 if pooled else 2) and item["text"].ndim == (1 if pooled else 2)
        assert isinstance(item["text_str"], str) and math.isfinite(item["start"])
    if items:
        collate_segments(items[:4])
    return ds


def test_fuzz_cache_index(tmp_path):
    cache = tmp_path / "cache"
    index = _make_cache(cache)
    valid = st.just(index)

    def check(args):
        data, pooled, max_frames = args
        (cache / cf.INDEX_FILE).write_bytes(data)
        _check_dataset(cache, pooled, max_frames)
    as_bytes = mutated_tree(valid).map(lambda t: json.dumps(t, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    run("cache_index", st.tuples(st.one_of(as_bytes, as_bytes, mutated(as_bytes, 3)), st.booleans(),
                                 st.sampled_from([None, 1, 2, 1000])), check)


def test_fuzz_shard_header(tmp_path):
    """Shard metadata (the per-shard manifest) and meta.json, as extract re-reads them to
    resume and to write the index; the index it writes must then read back."""
    from maven_fast.data.extract import PlannedVideo, write_index_if_complete

    cache = tmp_path / "cache"
    _make_cache(cache)
    shard = cf.shard_path(cache, "train", "p2")
    good = shard.read_bytes()
    meta_good = (cache / cf.META_FILE).read_bytes()
    plan = [PlannedVideo("train", n) for n in ("p1", "p2", "p3")]
    header = {"format": cf.CACHE_FORMAT, "signature": SIGNATURE, "settings": {"mode": "contiguous"}}

    def check(args):
        kind, payload = args
        (cache / cf.INDEX_FILE).unlink(missing_ok=True)
        shard.write_bytes(good)
        (cache / cf.META_FILE).write_bytes(meta_good)
        if kind == "metadata":
            _write_shard(shard, "p2", [4], metadata_edit=lambda m: {**m, **payload}
                         if isinstance(payload, dict) else {**m, "entry": payload})
        elif kind == "bytes":
            shard.write_bytes(payload)
        else:
            (cache / cf.META_FILE).write_bytes(payload)
        got = cf.read_shard_header(shard)
        assert got is None or (isinstance(got, dict) and got.get("format") == cf.CACHE_FORMAT)
        try:
            written = write_index_if_complete(cache, plan)
        except DataError as err:
            assert err.path.startswith(str(cache)) and str(err).startswith(err.path), str(err)
            assert kind == "meta" or got is not None, str(err)
            return
        if kind != "meta":  # (a shard of other encoders than meta.json's is not this cache's: no index)
            assert (written is None) == (got is None or got["signature"] != SIGNATURE), (written, got)
        if written is not None:
            ds = _check_dataset(cache, False, None)
            if kind != "meta":
                assert ds is not None  # an index written from a header that read back is usable
    metadata = mutated_tree(st.just({"entry": {"name": "p2", "video": "p2", "split": "train", "fps": "30/1",
                                               "num_frames": 4},
                                     "segments": [{"index": 0, "key": "0000", "frame_start": 0,
                                                   "frame_stop": 4, "start": 0.0, "end": 0.1333,
                                                   "text": "x", "num_audio_frames": 5,
                                                   "num_text_tokens": 2}],
                                     "skipped_segments": [], "issues": [], **header}), 3)
    meta_json = mutated_tree(st.just(header)).map(lambda t: json.dumps(t).encode())
    run("shard_header", st.one_of(st.tuples(st.just("metadata"), metadata),
                                  st.tuples(st.just("bytes"), mutated(st.just(good), 3)),
                                  st.tuples(st.just("meta"), st.one_of(meta_json, mutated(meta_json, 3)))),
        check)


# ====================================================================== checkpoints
TINY = ["model.encoders.video_dim=6", "model.encoders.audio_dim=5", "model.encoders.text_dim=5",
        "model.cross_modal.embed_dim=8", "model.cross_modal.num_heads=2", "model.beit.hidden_size=8",
        "model.beit.num_attention_heads=2", "model.beit.intermediate_size=16",
        "model.beit.num_hidden_layers=1", "model.regressor.hidden_sizes=[8,8]",
        "model.temporal.max_video_len=32"]


def _make_checkpoint(directory: Path):
    from maven_fast.model import MAVEN
    from maven_fast.train.checkpoint import save_checkpoint
    from maven_fast.train.trainer import build_optimizer, build_scheduler

    cfg = TrainConfig.load(None, TINY)
    model = MAVEN(cfg.model)
    optimizer = build_optimizer(cfg, model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    scheduler = build_scheduler(cfg, optimizer, 10)
    progress = {"epoch": 1, "step": 3, "epoch_step": 0, "best_P": 0.5, "best_step": 3}
    save_checkpoint(directory, model, optimizer, scheduler, progress, config=cfg.to_dict())
    return cfg


def test_fuzz_checkpoint(tmp_path):
    """manifest.json (and the files it vouches for) of a training checkpoint, read as eval and
    predict read it (`load_trained_model`) and as `--resume` reads it (`load_checkpoint`)."""
    import hashlib

    from maven_fast.model import MAVEN
    from maven_fast.train.api import load_trained_model
    from maven_fast.train.checkpoint import MANIFEST, MODEL_FILE, STATE_FILE, load_checkpoint
    from maven_fast.train.trainer import build_optimizer, build_scheduler

    ckpt = tmp_path / "run" / "checkpoints" / "last"
    cfg = _make_checkpoint(ckpt)
    originals = {n: (ckpt / n).read_bytes() for n in (MODEL_FILE, STATE_FILE, MANIFEST)}
    manifest = json.loads(originals[MANIFEST])
    model = MAVEN(cfg.model)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, optimizer, 10)

    def check(args):
        kind, payload, resign = args
        for n, b in originals.items():
            (ckpt / n).write_bytes(b)
        if kind == "manifest":
            (ckpt / MANIFEST).write_bytes(payload)
        else:  # a damaged data file; with resign, the manifest vouches for the damage
            (ckpt / kind).write_bytes(payload)
            if resign:
                m = json.loads(originals[MANIFEST])
                m["files"][kind] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
                (ckpt / MANIFEST).write_text(json.dumps(m))
        for load in ("eval", "resume"):
            try:
                if load == "eval":
                    got, got_cfg, _ = load_trained_model(ckpt, backend="eager")
                    assert isinstance(got_cfg, TrainConfig)
                else:
                    rng = torch.get_rng_state(), random.getstate()
                    try:
                        progress = load_checkpoint(ckpt, model, optimizer, scheduler)
                    finally:
                        torch.set_rng_state(rng[0])
                        random.setstate(rng[1])
                    for key in ("epoch", "step", "epoch_step"):
                        assert isinstance(progress[key], int) and progress[key] >= 0, progress
            except CheckpointError as err:
                assert str(ckpt) in str(err) and str(err).startswith(str(ckpt)), str(err)
    manifest_bytes = mutated_tree(st.just(manifest)).map(lambda t: json.dumps(t).encode("utf-8", "surrogatepass"))
    run("checkpoint", st.one_of(
        st.tuples(st.just("manifest"), st.one_of(manifest_bytes, manifest_bytes, mutated(manifest_bytes, 3)),
                  st.just(False)),
        st.tuples(st.just(MODEL_FILE), head_mutated(originals[MODEL_FILE]), st.booleans()),
        st.tuples(st.just(STATE_FILE), head_mutated(originals[STATE_FILE]), st.booleans())), check)


def head_mutated(data: bytes, head: int = 2048):
    """Mutations of a safetensors file's first bytes (its header), the rest kept."""
    return mutated(st.just(data[:head]), 3).map(lambda h: h + data[head:])
