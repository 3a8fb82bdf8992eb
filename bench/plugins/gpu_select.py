"""pytest plugin used by bench/gpu.sh: which GPU tests each pass runs.

bench/gpu.sh loads it in every pytest process it starts (xdist workers and
processes under compute-sanitizer too) through the environment:

    PYTHONPATH=bench/plugins PYTEST_PLUGINS=gpu_select GPU_SELECT=MODE \
        python -m pytest -m "gpu and not slow" tests

GPU_SELECT (unset: the plugin changes nothing; GPU_SELECT_LOG=FILE: each process
appends its one-line count there, since xdist workers print no summary):

``all``       every test the ``-m`` expression selects (``bench/gpu.sh --full``).
``matter``    the default pass: every test function, and for a parametrized one
              each combination of its *mode* parameters (strings, booleans,
              dtypes, None: backend, dtype, pathway, preset ...) at the smallest
              and the largest of its *size* parameters (numbers and tuples of
              numbers: shapes, head sizes, lengths, probabilities). A test without
              parameters (graph capture, determinism, opcheck ...) always runs.
``sanitize``  the CUDA op tests at small shapes, for compute-sanitizer: tests in a
              ``test_*cuda*.py`` file (not the emulator's) or with ``backend ==
              "cuda"`` outside the model tests, without torch.compile, Triton or
              large cases (names with compile, reduce_overhead, inductor, triton,
              large, long, big or a number of 5+ digits), each mode combination
              at its smallest size only.

Nothing is edited in the test files: a new GPU test joins these passes by its
``gpu`` marker, its file name and its parameter names. A GPU test marked
``slow`` as well runs only with ``--full`` (bench/gpu.sh's ``-m`` expression).
The selection is a pure function of the collected items, so every xdist worker
selects the same tests.
"""
from __future__ import annotations

import os
import re

import pytest

MODES = ("all", "matter", "sanitize")
_SANITIZE_SKIP = re.compile(r"compile|reduce_overhead|inductor|triton|large|long|big|\d{5,}", re.I)
_summary: list[str] = []


def _numbers(value):
    """The numbers in a size parameter, or None when the value is a mode (not numeric)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return [abs(value)]
    if isinstance(value, (tuple, list)) and value:
        out = []
        for v in value:
            n = _numbers(v)
            if n is None:
                return None
            out += n
        return out
    return None


def _split(item):
    """(mode key, size) of a collected item."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    key, size = [], 0.0
    for name in sorted(params):
        nums = _numbers(params[name])
        if nums is None:
            key.append((name, repr(params[name])))
        else:
            size += sum(nums)
    func = getattr(item, "originalname", None) or item.name.split("[")[0]
    return (str(item.path), func, tuple(key)), size


def _is_cuda_op_test(item) -> bool:
    base = os.path.basename(str(item.path))
    func = getattr(item, "originalname", None) or item.name.split("[")[0]
    if _SANITIZE_SKIP.search(func):
        return False
    backend = getattr(getattr(item, "callspec", None), "params", {}).get("backend")
    if backend is not None and backend != "cuda":
        return False
    if "cuda" in base and "emulat" not in base:
        return True
    return backend == "cuda" and not base.startswith("test_model")


def select(items, mode: str):
    """The items ``mode`` keeps, in collection order."""
    if mode == "all":
        return list(items)
    if mode == "sanitize":
        items = [it for it in items if _is_cuda_op_test(it)]
    groups: dict = {}
    for index, item in enumerate(items):
        key, size = _split(item)
        groups.setdefault(key, []).append((size, index))
    keep = set()
    for members in groups.values():
        smallest = min(members)  # ties: the first collected
        keep.add(smallest[1])
        if mode == "matter":
            keep.add(max(members, key=lambda m: (m[0], -m[1]))[1])
    return [it for i, it in enumerate(items) if i in keep]


@pytest.hookimpl(trylast=True)  # after -m/-k have deselected
def pytest_collection_modifyitems(config, items):
    mode = os.environ.get("GPU_SELECT", "").strip()
    if not mode:
        return
    if mode not in MODES:
        raise ValueError(f"GPU_SELECT={mode!r}: expected one of {', '.join(MODES)}")
    original = list(items)
    counts = {m: select(original, m) for m in MODES}
    kept_ids = {id(it) for it in counts[mode]}
    dropped = [it for it in original if id(it) not in kept_ids]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = counts[mode]
    line = (f"gpu_select: GPU_SELECT={mode} kept {len(items)} of {len(original)} tests "
            f"(all {len(counts['all'])}, matter {len(counts['matter'])}, sanitize {len(counts['sanitize'])})")
    _summary.append(line)
    log = os.environ.get("GPU_SELECT_LOG")
    if log:  # xdist workers print no terminal summary: bench/gpu.sh reads this file
        with open(log, "a") as f:
            f.write(line + "\n")


def pytest_terminal_summary(terminalreporter):
    for line in _summary:
        terminalreporter.write_line(line)
