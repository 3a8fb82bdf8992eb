"""The CPU ops' GEMM and buffer pool, as the tests and users see them.

``torch.ops.maven_fast._cpu_gemm_(out, a, b, beta, alpha, bias, kernel)``
sets ``out = beta * out + alpha * a @ b (+ bias)`` in place through the GEMM dispatch of the
CPU ops (``csrc/common/cpu_gemm.h``), so the tests can check its kernels on their own:
``kernel`` "any" (the dispatch: the skinny kernels for few-row products,
``csrc/common/skinny_gemm.h``; the bf16 kernels on an AVX512-BF16 CPU without AMX,
``csrc/common/bf16_gemm.h``; the fp32 kernels on an AVX2 CPU, ``csrc/common/fp32_gemm.h``;
else ATen), "skinny", "bf16" or "fp32" (that kernel, an error when it does not take the
call), "aten". :func:`pool_info`,
:func:`release_pool` and :func:`set_pool_limit` show and control the caching
allocator of the CPU ops' buffers (``csrc/common/cpu_pool.h``; default limit
512 MiB, environment variable ``MAVEN_FAST_CPU_POOL_MB``).
"""
from __future__ import annotations

import torch

from maven_fast._extension import extension, require_extension


def pool_info() -> dict:
    """Bytes cached and in use, the cache limit, hits and misses of the CPU ops' buffer pool."""
    return require_extension().cpu_pool_info()


def release_pool() -> None:
    """Returns every cached (free) block of the CPU ops' buffer pool to the system, and the GEMM
    kernels' scratch block (their packed operands, kept between calls) when no call holds it."""
    require_extension().cpu_pool_release()


def set_pool_limit(nbytes: int) -> None:
    """Caps the bytes the CPU ops' buffer pool keeps for reuse (0: keep nothing)."""
    require_extension().cpu_pool_set_limit(int(nbytes))


def _fake_cpu_gemm(out, a, b, beta, alpha, bias, kernel):
    return None


if extension() is not None:
    torch.library.register_fake("maven_fast::_cpu_gemm_")(_fake_cpu_gemm)
