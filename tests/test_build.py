"""The compiled extension: how it was built, how it fails, how it is packaged."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import maven_fast
from maven_fast import _extension

ROOT = Path(__file__).resolve().parents[1]


def test_build_info_reports_the_build():
    info = maven_fast.build_info()
    assert info["extension_loaded"], info.get("extension_error")
    assert info["built_torch_version"] == torch.__version__
    assert info["cxx11_abi"] == bool(torch._C._GLIBCXX_USE_CXX11_ABI)
    assert info["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "AVX512_BF16")
    # The bf16 GEMM kernels run only on AVX512-BF16 (csrc/common/bf16_gemm.h; not with AMX).
    assert isinstance(info["cpu_bf16_gemm"], bool)
    assert not info["cpu_bf16_gemm"] or info["cpu_capability"] == "AVX512_BF16"
    # The fp32 GEMM kernels run on AVX2 CPUs (csrc/common/fp32_gemm.h), unless turned off.
    fp32_on = info["cpu_capability"] == "AVX2" and os.environ.get("MAVEN_FAST_CPU_FP32_GEMM") != "0"
    assert info["cpu_fp32_gemm"] is fp32_on
    assert info["triton_version"] is not None
    assert set(info) >= {"cuda_kernels", "cuda_archs", "torch_version", "triton_version"}


@pytest.mark.skipif(shutil.which("nvcc") is None or torch.version.cuda is None,
                    reason="needs nvcc and a CUDA build of torch")
def test_cuda_kernels_are_compiled_when_a_toolkit_is_present():
    # CI has no GPU but has nvcc: the CUDA sources must still have compiled.
    info = maven_fast.build_info()
    assert info["cuda_kernels"], info["cuda_disabled_reason"]
    assert {"sm_80", "sm_90"} <= set(info["cuda_archs"])


def test_ops_are_registered_for_cpu_and_cuda():
    op = torch.ops.maven_fast.polar_head.default
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU")
    if maven_fast.build_info()["cuda_kernels"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CUDA")


def test_torch_version_mismatch_is_reported(monkeypatch):
    cfg = importlib.import_module("maven_fast._build_config")
    monkeypatch.setattr(cfg, "TORCH_VERSION", "1.0.0")
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "_load_error", None)
    _extension._load()
    msg = _extension.extension_error()
    assert "built for torch 1.0.0" in msg and torch.__version__ in msg and "no-build-isolation" in msg
    from maven_fast.backends import BackendUnavailable, resolve_backend

    with pytest.raises(BackendUnavailable, match="built for torch 1.0.0"):
        resolve_backend("cpu", "cpu")


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "maven_fast", "--help"], capture_output=True, text=True, check=True)
    assert "info" in out.stdout and "demo" in out.stdout


def test_wheel_ships_kernels_inside_the_package(tmp_path):
    """SPEC 1: the Triton sources ship as maven_fast/kernels; no top-level `kernels`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = tmp_path.glob("maven_fast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"maven_fast", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    assert "maven_fast/kernels/polar_head.py" in names
    assert any(n.startswith("maven_fast/_C") and n.endswith(".so") for n in names)
    assert "maven_fast/_build_config.py" in names


_SYS_PATH_PROBE = """
import json, os, sys
import maven_fast.kernels
try:
    import kernels
    top_level_kernels = kernels.__file__ or str(list(kernels.__path__))
except ModuleNotFoundError:
    top_level_kernels = None
print(json.dumps({
    "sys_path": [os.path.realpath(p) for p in sys.path if p],
    "maven_fast_kernels": os.path.realpath(maven_fast.kernels.__file__),
    "top_level_kernels": top_level_kernels,
}))
"""


def test_installed_package_adds_only_maven_fast_to_sys_path(tmp_path):
    """Issue 12.7: a fresh interpreter of the development (editable) install imports
    maven_fast and maven_fast.kernels, but no top-level `kernels`, and neither the
    checkout nor its parent folder is on sys.path (each would expose every folder in it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    run = subprocess.run([sys.executable, "-c", _SYS_PATH_PROBE], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    probe = json.loads(run.stdout)
    assert Path(probe["maven_fast_kernels"]).parts[-2:] == ("kernels", "__init__.py"), probe
    assert probe["top_level_kernels"] is None, f"`import kernels` found {probe['top_level_kernels']}"
    for folder in (ROOT, ROOT.parent):
        assert str(folder.resolve()) not in probe["sys_path"], (str(folder), probe["sys_path"])
