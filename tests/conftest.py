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
