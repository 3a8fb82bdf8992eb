"""Time-bounded fuzzing with Hypothesis (not a test module; tests/test_fuzz_readers.py uses it).

Each fuzz target is a Hypothesis strategy of inputs (mutations of valid files
plus raw bytes) and a check that feeds one input to a reader and asserts that
it ended in a correct parse or in the documented error. :func:`fuzz` runs a
target for a wall-clock budget: Hypothesis runs in rounds whose example counts
are sized from the rate measured so far, until the budget is spent, so the
whole fuzz run takes a known time whatever the machine.

Budget: ``MAVEN_FAST_FUZZ_SECONDS`` (default 60) for all targets together,
shared by their weights; ``MAVEN_FAST_FUZZ_DEADLINE`` (default 5 s) is the
longest one input may take before it counts as a hang (a SIGALRM timer, so a
reader stuck in a Python loop is stopped and the input shrunk; a reader stuck
inside C code, which no signal handler interrupts, is stopped at 4x the
deadline by faulthandler, which prints every thread's stack (on the terminal,
past pytest's capture: :data:`HANG_STREAM`) and exits, so CI fails instead of hanging); a fixed ``MAVEN_FAST_FUZZ_SEED`` makes a run
repeatable.
"""
from __future__ import annotations

import contextlib
import copy
import faulthandler
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

TOTAL_SECONDS = float(os.environ.get("MAVEN_FAST_FUZZ_SECONDS", "60"))
DEADLINE_SECONDS = float(os.environ.get("MAVEN_FAST_FUZZ_DEADLINE", "5"))
SEED = os.environ.get("MAVEN_FAST_FUZZ_SEED")


#: Where the stacks of a reader stuck in C code are printed before the process ends. pytest
#: redirects fd 2 to a temporary file during a test, which dies with the process: a C-level
#: hang then ended the run with no word (seen in a 20-minute run). test_fuzz_readers sets
#: this to the terminal's stderr (:func:`terminal_stderr`); None: this process's stderr.
HANG_STREAM = None


def terminal_stderr(config):
    """A file on the stderr pytest's capture saved (None where its internals differ)."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    err = getattr(getattr(capman, "_global_capturing", None), "err", None)
    fd = getattr(err, "targetfd_save", None)
    return os.fdopen(os.dup(fd), "w") if isinstance(fd, int) else None


class Hang(BaseException):
    """Raised by the deadline timer inside a reader (a BaseException, so that no
    ``except Exception`` in the reader can swallow it)."""


@contextlib.contextmanager
def deadline(seconds: float = DEADLINE_SECONDS):
    """Stop the block with :class:`Hang` after ``seconds`` of wall time."""
    def on_alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(4 * seconds, exit=True, file=HANG_STREAM or sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Stats:
    name: str
    inputs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return f"{self.name:<22} {self.inputs:>7} inputs in {self.seconds:6.2f} s: {self.rate:8.1f} inputs/s"


def fuzz(name: str, strategy, check, seconds: float) -> Stats:
    """Run ``check(x)`` on inputs ``x`` drawn from ``strategy`` for ``seconds`` of wall time.

    A failing input (an assertion, an unexpected exception, or a hang past the
    deadline) is shrunk by Hypothesis and re-raised with the minimal input
    printed. Returns how many inputs ran and how long it took.
    """
    count = 0
    start = time.perf_counter()
    end = start + seconds
    failing = False  # once an input failed, Hypothesis replays and shrinks it past the budget
    limit = DEADLINE_SECONDS

    def body(x):
        nonlocal count, failing, limit
        if not failing and time.perf_counter() > end:  # budget spent: the round ends at once
            return
        count += 1
        try:
            with deadline(limit):
                check(x)
        except Hang:
            # Shrinking a hang runs many inputs that hang: 1 s each is enough to tell.
            failing, limit = True, min(limit, 1.0)
            raise AssertionError(f"{name}: no answer after {limit:g} s: a hang") from None
        except BaseException:
            failing = True
            raise

    batch = 10
    while True:
        left = end - time.perf_counter()
        if left <= 0:
            break
        runner = settings(
            max_examples=batch, deadline=None, database=None, print_blob=True,
            suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
            phases=(Phase.generate, Phase.target, Phase.shrink),
        )(given(strategy)(body))
        if SEED is not None:
            runner = seed(int(SEED) + count)(runner)
        before, t0 = count, time.perf_counter()
        runner()
        took = time.perf_counter() - t0
        rate = (count - before) / took if took > 0 else 1000.0
        # Fill most of what is left; later rounds top up (each round restarts Hypothesis's
        # size ramp, so a few large rounds explore better than many small ones).
        batch = int(min(100_000, max(5, rate * (end - time.perf_counter()) * 0.9)))
    return Stats(name, count, time.perf_counter() - start)


# ------------------------------------------------------------------ mutations of bytes and text
#: Values that break readers: signs, overflow, NaN, non-ASCII digits, separators, huge digit runs.
TOKENS = [
    "", " ", "\t", "-", "-1", "-0", "-0.5", "0", "1", "2147483648", "9223372036854775808",
    "1e308", "1e309", "-1e309", "1e-400", "nan", "NaN", "inf", "-inf", "Infinity", "-Infinity",
    "9" * 40, "9" * 400, "9" * 5000, "0x1F", "1_000", "\u0663", "\uff11", "1.", ".5", "1..2",
    "00:00", "-00:00:01,000", "99:99:99,999", "1:2:3:4", "-->", " --> ", "[", "]", "{", "}",
    "[" * 2000, "{\"a\":" * 2000, "- " * 1000, "&a [*a, *a]", "*a", "!!python/object:os.system",
    "!!binary", "<<: ", ":", ",", "\"", "'", "\\", "\x00", "\x1b", "\u2028", "\ud7ff", "\ufeff",
    "\u00e9", "e\u0301", "\U0001f600", "null", "true", "~", "%YAML 1.2", "---", "...",
    "WEBVTT", "NOTE", "<v Ann>", "<i>", "&amp;", "start\tend\ttext", "valence,arousal", "-5",
]
#: Raw byte sequences: invalid UTF-8, BOMs, odd UTF-16.
BYTE_TOKENS = [b"\xff", b"\xfe", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf",
               b"\xff\xfe", b"\xfe\xff", b"\x00", b"\r", b"\r\n", b"\n" * 50, b"\xf4\x90\x80\x80"]

_pos = st.integers(0, 1 << 30)


def _at(draw, data) -> int:
    return draw(_pos) % (len(data) + 1)


def _op_insert_token(draw, data: bytearray, rep: int = 3000) -> bytearray:
    i = _at(draw, data)
    token = draw(st.sampled_from(TOKENS)).encode("utf-8", "surrogatepass")
    return data[:i] + token + data[i:]


def _op_insert_bytes(draw, data, rep: int = 3000):
    i = _at(draw, data)
    token = draw(st.one_of(st.sampled_from(BYTE_TOKENS), st.binary(min_size=1, max_size=8)))
    return data[:i] + token + data[i:]


def _op_delete(draw, data, rep: int = 3000):
    i = _at(draw, data)
    return data[:i] + data[i + draw(st.integers(1, 64)):]


def _op_replace_number(draw, data, rep: int = 3000):
    spans = [m.span() for m in re.finditer(rb"\d+(?:[.,]\d+)?", data)]
    if not spans:
        return _op_insert_token(draw, data)
    a, b = spans[draw(_pos) % len(spans)]
    return data[:a] + draw(st.sampled_from(TOKENS)).encode("utf-8", "surrogatepass") + data[b:]


def _op_lines(draw, data, rep: int = 3000):
    lines = data.split(b"\n")
    i, j = draw(_pos) % len(lines), draw(_pos) % len(lines)
    action = draw(st.sampled_from(["dup", "delete", "swap", "blank", "indent", "repeat"]))
    if action == "dup":
        lines.insert(i, lines[j])
    elif action == "delete":
        del lines[i]
    elif action == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif action == "blank":
        lines.insert(i, b"")
    elif action == "indent":
        lines[i] = draw(st.sampled_from([b" ", b"  ", b"\t", b"    "])) + lines[i]
    else:  # a long file: one line many times
        lines[i:i] = [lines[j]] * draw(st.integers(2, rep))
    return bytearray(b"\n".join(lines))


def _op_encoding(draw, data, rep: int = 3000):
    action = draw(st.sampled_from(["bom", "crlf", "cr", "utf16", "utf16-odd", "latin1", "truncate",
                                   "empty", "whitespace"]))
    if action == "bom":
        return bytearray(b"\xef\xbb\xbf") + data
    if action == "crlf":
        return bytearray(data.replace(b"\n", b"\r\n"))
    if action == "cr":
        return bytearray(data.replace(b"\n", b"\r"))
    if action in ("utf16", "utf16-odd"):
        text = bytes(data).decode("utf-8", "replace")
        out = bytearray(text.encode("utf-16"))
        return out + b"\x00" if action == "utf16-odd" else out
    if action == "latin1":
        return bytearray(bytes(data).decode("utf-8", "replace").encode("latin-1", "replace")) + b"\xe9"
    if action == "truncate":
        return data[:_at(draw, data)]
    if action == "empty":
        return bytearray()
    return bytearray(b" \n\t\n")


#: What goes at the start or end of a line: indentation, stray control characters, a BOM.
EDGE_TOKENS = [" ", "  ", "\t", "\t\t", "\r", "\x0b", "\x0c", "\x00", "\ufeff", "\u00a0", "\u2028", "#", "-"]


def _op_line_edge(draw, data, rep: int = 3000):
    """A token at the start or the end of one line (where indentation and trimming bugs live)."""
    lines = data.split(b"\n")
    i = draw(_pos) % len(lines)
    token = draw(st.one_of(st.sampled_from(EDGE_TOKENS), st.sampled_from(TOKENS))).encode("utf-8", "surrogatepass")
    lines[i] = token + lines[i] if draw(st.booleans()) else lines[i] + token
    return bytearray(b"\n".join(lines))


def _op_repeat(draw, data, rep: int = 3000):
    i = _at(draw, data)
    j = min(len(data), i + draw(st.integers(1, 40)))
    return data[:i] + data[i:j] * draw(st.integers(2, rep)) + data[j:]


_OPS = [_op_insert_token, _op_insert_bytes, _op_delete, _op_replace_number, _op_lines, _op_encoding,
        _op_repeat, _op_line_edge, _op_line_edge]


@st.composite
def mutated(draw, base, max_ops: int = 4, max_repeat: int = 3000) -> bytes:
    """A valid file from ``base`` (bytes), changed by up to ``max_ops`` mutations (a line or
    a stretch of bytes repeated up to ``max_repeat`` times among them)."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, max_ops))):
        data = draw(st.sampled_from(_OPS))(draw, data, max_repeat)
    return bytes(data)


def file_bytes(valid, max_ops: int = 4, max_repeat: int = 3000):
    """Mostly mutated valid files, sometimes raw bytes."""
    m = mutated(valid, max_ops, max_repeat)
    return st.one_of(m, m, m, st.binary(max_size=512))


# ------------------------------------------------------------------ mutations of JSON/YAML trees
def weird_values(depth: int = 0):
    deep = st.integers(1, 150).map(lambda n: _nest(n))
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(),
        st.sampled_from([0, -1, 1, -5, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400, 1e308, -1e-308,
                         float("nan"), float("inf"), -float("inf"), 0.5, -0.0]),
        st.text(max_size=12), st.sampled_from(["", "0", "1e-3", "nan", "../..", "/dev/zero", ".",
                                               "a" * 300, "0000", "\ud800", "x\x00y"]),
        st.just([]), st.just({}), st.lists(st.integers(-3, 3), max_size=3),
        st.dictionaries(st.text(max_size=4), st.integers(-2, 2), max_size=2), deep,
    )


def _nest(n: int):
    value: object = 0
    for i in range(n):
        value = [value] if i % 2 else {"a": value}
    return value


def _slots(obj, path=()):
    """Every (container, key) in a tree of dicts and lists."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield obj, k
            yield from _slots(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield obj, i
            yield from _slots(v, path + (i,))


@st.composite
def mutated_tree(draw, base, max_ops: int = 4):
    """A JSON-like tree from ``base`` with up to ``max_ops`` values replaced by wrong types,
    huge or negative numbers, deep nesting; keys deleted, added or renamed."""
    tree = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(0, max_ops))):
        slots = list(_slots(tree))
        if not slots or draw(st.integers(0, 30)) == 0:
            tree = draw(weird_values())
            continue
        parent, key = slots[draw(_pos) % len(slots)]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "rename",
                                       "scale", "dup"]))
        if action == "replace":
            parent[key] = draw(weird_values())
        elif action == "delete":
            del parent[key]
        elif action == "add":
            if isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(weird_values())
            else:
                parent.insert(key, draw(weird_values()))
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = parent.pop(key)
        elif action == "scale" and isinstance(parent[key], (int, float)) \
                and not isinstance(parent[key], bool):
            parent[key] = parent[key] * draw(st.sampled_from([-1, 0, 10**6, 10**20, 1e300, 0.5]))
        elif action == "dup" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
    return tree


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
