"""``maven_fast.build_info()``: how the installed extension was built and what runs here."""
from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import torch

from maven_fast._extension import extension, extension_error
from maven_fast._version import __version__


def _version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def build_info() -> dict[str, Any]:
    """Build and runtime facts: the torch the extension was compiled against,
    its C++ ABI, whether CUDA kernels were compiled and for which archs, the CPU
    instruction set the CPU kernels use, and the runtime torch/Triton/GPU."""
    ext = extension()
    info: dict[str, Any] = {"maven_fast_version": __version__, "extension_loaded": ext is not None}
    if ext is None:
        info["extension_error"] = extension_error()
    else:
        built = dict(ext.build_info())
        info.update(
            built_torch_version=built["torch_version"],
            built_torch_cuda_version=built["torch_cuda_version"] or None,
            cxx11_abi=built["cxx11_abi"],
            cuda_kernels=built["cuda"],
            cuda_archs=[f"sm_{a}" for a in built["cuda_archs"].split(",") if a],
            cuda_compiler_version=built["cuda_compiler_version"] or None,
            cuda_disabled_reason=built["cuda_disabled_reason"] or None,
            cxx_compiler=built["cxx_compiler"],
            bounds_checks=built["bounds_checks"],
            cpu_capability=built["cpu_capability"],
            cpu_bf16_gemm=built["cpu_bf16_gemm"],
            cpu_fp32_gemm=built["cpu_fp32_gemm"],
        )
    info.update(
        torch_version=torch.__version__,
        torch_cuda_version=torch.version.cuda,
        triton_version=_version_of("triton"),
        cuda_available=torch.cuda.is_available(),
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        python=platform.python_version(),
        machine=platform.machine(),
    )
    return info
