"""Test-suite set-up.

Without a GPU, Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET
must be set before any kernel module is imported, hence here. Tests marked
``gpu`` are skipped unless a CUDA device is present.

The compiled extension (maven_fast._C) must load: if it does not (not built,
built for another torch, an undefined symbol), the run stops before collecting
any test, with the reason and the fix, and exits with status 1. A broken build
never turns into a run of skipped tests.
"""
import contextlib
import hashlib
import os
import shutil
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    from maven_fast._extension import extension, extension_error

    if extension() is None:
        pytest.exit(f"maven_fast's compiled extension did not load, so the fused ops cannot be tested: "
                    f"{extension_error()}", returncode=1)


def pytest_report_header(config):
    from maven_fast.backends import available_backends

    lines = []
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        runs = [b for b, problems in available_backends(device).items() if not problems]
        lines.append(f"maven_fast backends on {device} tensors: {', '.join(runs)}")
    return lines


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _compute_dtype_auto_is_float32_on_cpu():
    """``compute_dtype="auto"`` (extract's default) and ``run.autocast=auto`` resolve by the CPU's
    bf16 features; the suite pins both to fp32 on the CPU so its results do not depend on the
    machine. An environment variable, so the processes tests start (a killed and resumed run,
    torchrun ranks) resolve ``auto`` as the test process does. The tests of ``auto`` itself set
    the features they need."""
    from maven_fast.encoders.precision import CPU_BF16_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CPU_BF16_ENV, "0")
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


@pytest.fixture
def build_inductor_cache():
    """A context manager: torch.compile's on-disk caches (Inductor, Triton) in a folder
    keyed by this build of maven_fast's ops (the compiled extension, and maven_fast/ops
    and kernels/, which register the ops' fake kernels and Triton kernels),
    build/inductor-cache/<key>. Inductor's own cache key does not cover a custom op's
    implementation, so the default cache could replay graphs of an older build; a fresh
    cache per test would recompile the whole model every run (minutes on 2 cores; the
    first run after a change of the ops pays that once). Other keys' folders are removed."""
    import maven_fast
    from maven_fast._extension import extension

    root = Path(maven_fast.__file__).resolve().parents[1]
    h = hashlib.sha256()
    ext = extension()
    if ext is not None:
        st = Path(ext.__file__).stat()
        h.update(f"{ext.__file__}:{st.st_size}:{st.st_mtime_ns}".encode())
    for folder in ("maven_fast/ops", "kernels"):
        for f in sorted((root / folder).rglob("*.py")):
            h.update(f.read_bytes())
    h.update(torch.__version__.encode())
    base = root / "build" / "inductor-cache"
    here = base / h.hexdigest()[:16]
    if base.is_dir():
        for old in base.iterdir():
            if old != here:
                shutil.rmtree(old, ignore_errors=True)
    here.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def cache():
        from torch._inductor import utils as inductor_utils

        # clear_caches (torch 2.14); older releases name it clear_inductor_caches
        clear_caches = getattr(inductor_utils, "clear_caches", None) or inductor_utils.clear_inductor_caches
        saved = {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
        clear_caches()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(here)
        os.environ["TRITON_CACHE_DIR"] = str(here / "triton")
        try:
            yield here
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            clear_caches()

    return cache
