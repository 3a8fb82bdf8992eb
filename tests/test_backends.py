"""The dispatch point (maven_fast.backends): what `auto` picks per device and dtype."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import maven_fast
import maven_fast.backends as backends
from maven_fast._extension import extension, extension_error
from maven_fast.backends import (AUTO_GPU_ORDER, BackendUnavailable, auto_gpu_order, available_backends,
                                 resolve_backend)

ROOT = Path(__file__).resolve().parents[1]


def _pretend(monkeypatch, runnable: set[str]) -> None:
    """Only the backends in ``runnable`` can run (whatever this machine has)."""
    monkeypatch.setattr(backends, "backend_problems",
                        lambda b, *a, **k: [] if b in runnable else [f"{b} cannot run here (test)"])


@pytest.mark.parametrize("dtype,first", [(torch.float32, "cuda"), (torch.bfloat16, "cuda"),
                                         (torch.float16, "cuda")], ids=str)
def test_auto_on_cuda_tensors_follows_the_table_per_dtype(monkeypatch, dtype, first):
    _pretend(monkeypatch, {"cuda", "triton"})
    assert auto_gpu_order("cross_modal_block", dtype)[0] == first
    assert resolve_backend("auto", "cuda", dtype, op="cross_modal_block") == first
    other = ({"cuda", "triton"} - {first}).pop()
    _pretend(monkeypatch, {other})  # the preferred one cannot run: the next in the order
    assert resolve_backend("auto", "cuda", dtype, op="cross_modal_block") == other


def test_auto_names_every_reason_when_nothing_runs(monkeypatch):
    _pretend(monkeypatch, set())
    with pytest.raises(BackendUnavailable, match=r"(?s)cuda:.*cannot run.*triton:.*cannot run.*eager"):
        resolve_backend("auto", "cuda", torch.bfloat16, op="cross_modal_block")


def test_auto_on_cpu_tensors_is_the_cpu_extension(monkeypatch):
    _pretend(monkeypatch, {"cpu"})
    assert resolve_backend("auto", "cpu", torch.bfloat16, op="cross_modal_block") == "cpu"


def test_every_table_entry_has_a_reason_and_valid_backends():
    for op, per_dtype in AUTO_GPU_ORDER.items():
        for dtype, order in per_dtype.items():
            assert set(order) <= {"cuda", "triton"} and len(order) == len(set(order))
            assert backends.AUTO_GPU_REASON[(op, dtype)], (op, dtype)
    assert auto_gpu_order("polar_head", torch.bfloat16) == backends.AUTO_GPU_DEFAULT


# ---------------------------------------------------------------------- this machine
def test_extension_loaded_and_the_backends_this_machine_runs():
    """What runs here, as maven_fast.backends defines it. CI (no GPU): the compiled
    extension, eager and the C++ CPU kernels, and Triton in its CPU interpreter
    (TRITON_INTERPRET=1, set by conftest.py); the CUDA backend only refuses CPU
    tensors (its kernels are compiled where nvcc is, tests/test_build.py). With a GPU:
    the CUDA and Triton kernels on CUDA tensors."""
    assert extension() is not None, extension_error()
    assert extension_error() is None
    on_cpu = available_backends("cpu")
    assert on_cpu["eager"] == [] and on_cpu["cpu"] == [], on_cpu
    assert any("runs CUDA tensors" in r for r in on_cpu["cuda"]), on_cpu["cuda"]
    if torch.cuda.is_available():
        on_gpu = available_backends("cuda")
        assert on_gpu["triton"] == [] and on_gpu["eager"] == [], on_gpu
        assert on_gpu["cuda"] == [] or not maven_fast.build_info()["cuda_kernels"], on_gpu["cuda"]
        assert any("runs CPU tensors" in r for r in on_gpu["cpu"]), on_gpu["cpu"]
    else:
        assert os.environ.get("TRITON_INTERPRET") == "1"
        assert on_cpu["triton"] == [], on_cpu["triton"]  # the interpreter
        assert [b for b, why in on_cpu.items() if not why] == ["eager", "cpu", "triton"]


def test_a_failed_extension_load_stops_the_test_run():
    """maven_fast._C made unloadable (an import hook): pytest stops before collecting, names
    the reason, and exits 1; no test runs, none is skipped."""
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'maven_fast._C':\n"
        "            raise ImportError('undefined symbol: _ZN2at4test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_backends.py']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "maven_fast's compiled extension did not load" in text and "undefined symbol: _ZN2at4test" in text, \
        text[-3000:]
    assert "passed" not in text and "skipped" not in text, text[-3000:]
