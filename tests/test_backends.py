"""The dispatch point (maven_fast.backends): what `auto` picks per device and dtype."""
from __future__ import annotations

import pytest
import torch

import maven_fast.backends as backends
from maven_fast.backends import AUTO_GPU_ORDER, BackendUnavailable, auto_gpu_order, resolve_backend


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
