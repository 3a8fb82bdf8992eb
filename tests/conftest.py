"""Test-suite set-up.

Without a GPU, Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET
must be set before any kernel module is imported, hence here. Tests marked
``gpu`` are skipped unless a CUDA device is present.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _compute_dtype_auto_is_float32_on_cpu():
    """``compute_dtype="auto"`` (extract's default) resolves by the CPU's bf16 features; the suite
    pins it to fp32 on the CPU so its results do not depend on the machine. The tests of ``auto``
    itself (test_encoder_runtime.py) set the features they need."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("maven_fast.encoders.precision.cpu_bf16_features", lambda: [])
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def cuda_emulator():
    """maven_fast's CUDA kernels compiled for the CPU emulator (tests/cuda_emulation),
    built once per session (cached under build/cuda_emulation)."""
    from cuda_emulation.build import load

    return load()
