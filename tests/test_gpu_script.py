"""bench/gpu.sh --dry-run on the CPU: the GPU script's logic, paths, commands and outputs.

The dry run executes every step with its commands replaced by checks (the pytest
selections must collect tests, the benchmark's command lines must parse, the
build's tools must be there) and writes the same files as a GPU run. One run
makes the racecheck step overrun a 2 s limit (it must be cut and the benchmark
after it must still run); a second makes the build overrun (the run must stop,
say so, and still write its files).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.sh"
STEPS = ["machine", "build", "tests", "memcheck", "racecheck", "bench"]
PROMISED = {"report.md", "results.tar.gz", "timeline.tsv", "ptxas-resources.md", "bench.md"}
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
WATCHED = [ROOT, ROOT / "bench", ROOT / "bench" / "results", ROOT / "bench" / "plugins"]


def _listing():
    return {str(d / n) for d in WATCHED if d.is_dir() for n in os.listdir(d) if n != "__pycache__"}


def _dry_run(tmp_path, tag, overrun):
    out, tmp = tmp_path / f"out-{tag}", tmp_path / f"tmp-{tag}"
    out.mkdir()
    tmp.mkdir()
    env = {**os.environ, "OUT": str(out), "TMPDIR": str(tmp), "PYTHON": sys.executable,
           "GPU_SH_DRY_OVERRUN": overrun}
    before = _listing()
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=400, cwd=tmp)
    new = sorted(_listing() - before)
    log = f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    return proc, out, tmp, new, log


def _step_rows(report: str) -> dict[str, list[str]]:
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in STEPS:
            rows[cells[0]] = cells
    return rows


def _check_promised_files(out: Path, log: str):
    names = set(os.listdir(out))
    assert names == PROMISED, log
    assert len(names) <= 8
    for name in names:
        path = out / name
        assert NAME.match(name) and path.is_file(), name
        assert 0 < path.stat().st_size < 16 * 2**20, name


def test_dry_run_cuts_an_overrun_step_and_runs_the_rest(tmp_path):
    proc, out, tmp, new, log = _dry_run(tmp_path, "racecheck", "racecheck")
    assert proc.returncode == 0, log
    _check_promised_files(out, log)
    assert new == [], f"the dry run wrote outside $OUT: {new}"
    assert not [n for n in os.listdir(tmp) if n.startswith("maven-gpu.")], "the scratch folder was not removed"

    report = (out / "report.md").read_text()
    rows = _step_rows(report)
    assert list(rows) == STEPS, report
    for step, cells in rows.items():
        status, seconds, budget, limit = cells[1:5]
        assert float(seconds) >= 0 and int(budget) > 0, cells
        if step == "racecheck":
            assert status == "cut" and limit == "2", cells
        else:
            assert status == "ok (dry run)", cells
    assert "Cut (reached their limit): racecheck." in report
    # The time line: every step started and ended, in order, the cut one included.
    for step in STEPS:
        assert re.search(rf"step {step}: start \(budget \d+ s, limit \d+ s\)", proc.stdout), step
        assert re.search(rf"step {step}: (ok \(dry run\)|cut) in [0-9.]+ s", proc.stdout), step
    assert proc.stdout.index("step racecheck: cut") < proc.stdout.index("step bench: start")
    timeline = [line.split("\t") for line in (out / "timeline.tsv").read_text().splitlines()]
    assert [r[0] for r in timeline] == ["step"] + STEPS
    race, bench = timeline[1 + STEPS.index("racecheck")], timeline[1 + STEPS.index("bench")]
    assert race[6:] == ["cut", "124"] and bench[6] == "ok (dry run)"
    assert float(bench[1]) >= float(race[2]) - 0.2  # the benchmark began after the cut

    # The selections collect tests; the sanitizer's is a strict subset of the default one.
    counts = re.search(r"GPU_SELECT=matter kept (\d+) of (\d+) tests \(all (\d+), matter \d+, sanitize (\d+)\)",
                       report)
    assert counts, report
    matter, total, _, sanitize = map(int, counts.groups())
    assert 0 < sanitize < matter <= total, counts.group(0)
    assert re.search(rf"summary: \(dry run\) simulated: 0 failed, {matter} passed", report), report
    assert re.search(r"GPU_SELECT=sanitize kept (\d+)", report), report
    for name in ("cross_modal", "polar_head", "train_step"):
        assert f"- {name}: ok (dry run)" in report
    assert "registers" in (out / "ptxas-resources.md").read_text().lower()
    assert "SPEC 6 targets" in (out / "bench.md").read_text()

    with tarfile.open(out / "results.tar.gz") as tar:
        members = {m.name for m in tar.getmembers()}
        assert all(m == "results" or m.startswith("results/") for m in members), members
        for step in STEPS:
            assert f"results/{step}.log" in members, step
        for name in ("timeline.tsv", "report.md", "build_info.json", "ptxas-resources.txt",
                     "ptxas-resources.md", "sanitizer-probe.cu", "bench-suites.tsv"):
            assert f"results/{name}" in members, name
        tests_log = tar.extractfile("results/tests.log").read().decode()
        memcheck_log = tar.extractfile("results/memcheck.log").read().decode()
    assert re.search(r"^collected: [1-9]\d*$", tests_log, re.M), tests_log
    assert re.search(r"^collected: [1-9]\d*$", memcheck_log, re.M), memcheck_log
    assert r"-m gpu\ and\ not\ slow" in tests_log and "GPU_SELECT=matter" in tests_log
    assert "--tool memcheck --error-exitcode 7" in memcheck_log and "GPU_SELECT=sanitize" in memcheck_log


def test_dry_run_stops_after_a_cut_build_and_still_reports(tmp_path):
    proc, out, tmp, new, log = _dry_run(tmp_path, "build", "build")
    assert proc.returncode == 2, log
    _check_promised_files(out, log)
    assert new == [] and not [n for n in os.listdir(tmp) if n.startswith("maven-gpu.")]
    rows = _step_rows((out / "report.md").read_text())
    assert rows["machine"][1] == "ok (dry run)" and rows["build"][1] == "cut", rows
    for step in STEPS[2:]:
        assert rows[step][1] == "not run (the build cut)", rows[step]
    assert "Stopped after the build" in (out / "report.md").read_text()
    assert (out / "bench.md").read_text().startswith("not produced")


def test_unknown_option_is_refused():
    proc = subprocess.run(["bash", str(SCRIPT), "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64 and "unknown option" in proc.stderr


# --------------------------------------------------------------------------- the selection plugin
@pytest.fixture(scope="module")
def gpu_select():
    sys.path.insert(0, str(ROOT / "bench" / "plugins"))
    try:
        import gpu_select
    finally:
        sys.path.pop(0)
    return gpu_select


def _item(path, func, **params):
    ids = "-".join(str(v) for v in params.values())
    return SimpleNamespace(path=Path(path), originalname=func, name=f"{func}[{ids}]" if params else func,
                           callspec=SimpleNamespace(params=params) if params else None)


def test_matter_keeps_each_mode_at_its_smallest_and_largest_size(gpu_select):
    items = [_item("tests/test_x_cuda.py", "test_ref", dtype=dt, shortcuts=sc, t=t)
             for dt in ("f32", "bf16") for sc in (False, "absorb") for t in ((5, 7, 9), (1, 1, 1), (257, 3, 1))]
    items.append(_item("tests/test_x_cuda.py", "test_graph_capture"))
    kept = gpu_select.select(items, "matter")
    assert len(kept) == 2 * 2 * 2 + 1
    assert {it.callspec.params["t"] for it in kept if it.callspec} == {(1, 1, 1), (257, 3, 1)}
    assert kept[-1].name == "test_graph_capture"
    assert gpu_select.select(items, "all") == items


def test_sanitize_keeps_cuda_op_tests_at_their_smallest_size(gpu_select):
    items = [
        _item("tests/test_x_cuda.py", "test_ref", dtype="f32", n=1000),
        _item("tests/test_x_cuda.py", "test_ref", dtype="f32", n=1),
        _item("tests/test_x_cuda.py", "test_compile_fullgraph"),
        _item("tests/test_x_cuda.py", "test_long_keys", dtype="f32"),
        _item("tests/test_x_cuda.py", "test_more_than_65535_pairs", backend="cuda"),
        _item("tests/test_head.py", "test_gpu", backend="cuda", n=7),
        _item("tests/test_head.py", "test_gpu", backend="triton", n=7),
        _item("tests/test_model_backends.py", "test_gpu", backend="cuda", preset="paper"),
        _item("tests/test_x_cuda_emulated.py", "test_emulated"),
    ]
    kept = [(it.path.name, it.name) for it in gpu_select.select(items, "sanitize")]
    assert kept == [("test_x_cuda.py", "test_ref[f32-1]"), ("test_head.py", "test_gpu[cuda-7]")]
