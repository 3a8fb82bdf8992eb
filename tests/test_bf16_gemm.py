"""The bf16 GEMM kernels of the CPU ops (csrc/common/bf16_gemm.h: vdpbf16ps pair tiles, operands
repacked as bf16 pairs), through the test op ``maven_fast::_cpu_gemm_`` with ``kernel="bf16"``,
and where the CPU GEMM dispatch (csrc/common/cpu_gemm.h) sends bf16 products."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import maven_fast
from maven_fast._extension import extension

pytestmark = pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built")


def _available() -> bool:
    return bool(maven_fast.build_info().get("cpu_bf16_gemm"))


needs_kernels = pytest.mark.skipif(not _available(), reason="needs an AVX512-BF16 CPU without AMX")


def _gemm(out, a, b, beta, alpha, bias, kernel="bf16"):
    """beta * out + alpha * a @ b (+ bias) through maven_fast::_cpu_gemm_ (out is left unchanged)."""
    result = out.clone()
    torch.ops.maven_fast._cpu_gemm_(result, a, b, beta, alpha, bias, kernel)
    return result


def _matrix(rows, cols, transposed, pad, offset):
    """A bf16 [rows, cols] view: rows (or columns, `transposed`) of a wider buffer with `pad`
    extra elements per line, starting `offset` elements in (an odd offset or pad: words that
    are not 4-byte aligned, which the kernels repack)."""
    lines, width = (cols, rows) if transposed else (rows, cols)
    buf = torch.randn(lines, width + pad + offset, dtype=torch.bfloat16)[:, offset:offset + width]
    return buf.t() if transposed else buf


# (m, k, n): several 96-row blocks and 64-column panels with remainders, odd k (a zero half
# in the last pair), tiny dimensions, and the block's shapes (k = 512, n = 512; k = tokens).
SHAPES = [(100, 512, 512), (7, 3, 5), (200, 37, 130), (65, 64, 64), (1, 1, 1), (13, 1024, 70),
          (97, 2, 17), (6, 250, 128)]


def _check(m, k, n, a_t, b_t, pad, offset, beta, alpha, with_bias):
    a = _matrix(m, k, a_t, pad, offset)
    b = _matrix(k, n, b_t, pad, offset)
    c_buffer = torch.randn(m, n + pad, dtype=torch.bfloat16)
    before = c_buffer.clone()
    out = c_buffer[:, :n]  # C a column slice when padded
    bias = torch.randn(n, dtype=torch.bfloat16) if with_bias else None
    torch.ops.maven_fast._cpu_gemm_(out, a, b, beta, alpha, bias, "bf16")
    exact = (alpha * (a.double() @ b.double()) + (before[:, :n].double() if beta else 0)
             + (bias.double() if with_bias else 0))
    # fp32 accumulation and one rounding to bf16, as torch's bf16 GEMM: within twice its error.
    mine = (torch.addmm(bias, a, b, beta=0, alpha=alpha) if with_bias
            else torch.addmm(before[:, :n], a, b, beta=beta, alpha=alpha))
    torch_err = (mine.double() - exact).abs().max().item()
    err = (out.double() - exact).abs().max().item()
    case = (m, k, n, a_t, b_t, pad, offset, beta, alpha, with_bias)
    assert err <= 2 * torch_err + 1e-4 * exact.abs().max().item(), (case, err, torch_err)
    assert torch.equal(c_buffer[:, n:], before[:, n:]), case


@needs_kernels
@pytest.mark.parametrize("a_t", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("b_t", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("pad,offset", [(0, 0), (5, 0), (4, 1)], ids=["dense", "odd-ld", "unaligned"])
def test_bf16_gemm_matches_reference(a_t, b_t, pad, offset):
    torch.manual_seed(0)
    for m, k, n in SHAPES:
        for beta, alpha, with_bias in ((0.0, 1.0, False), (1.0, 0.7, False), (0.0, -1.3, True)):
            _check(m, k, n, a_t, b_t, pad, offset, beta, alpha, with_bias)


@needs_kernels
def test_bf16_gemm_leaves_the_rest_of_out_alone():
    """C is a block inside a larger matrix: the elements around it keep their values."""
    big = torch.randn(140, 200, dtype=torch.bfloat16)
    a, b = torch.randn(100, 96, dtype=torch.bfloat16), torch.randn(96, 130, dtype=torch.bfloat16)
    before = big.clone()
    torch.ops.maven_fast._cpu_gemm_(big[20:120, 30:160], a, b, 0.0, 1.0, None, "bf16")
    inside = torch.zeros_like(big, dtype=torch.bool)
    inside[20:120, 30:160] = True
    assert torch.equal(big[~inside], before[~inside])
    torch.testing.assert_close(big[20:120, 30:160].float(), (a.float() @ b.float()), rtol=0.02, atol=0.05)


@needs_kernels
@pytest.mark.parametrize("a_t,b_t", [(False, True), (True, False)])
def test_bf16_gemm_accumulates_in_fp32(a_t, b_t):
    # Every product is 1 + 2^-7; their sum over k = 1024 is exact in fp32 and representable in
    # bf16, while a running sum in bf16 would lose the 2^-7 parts long before the end.
    k = 1024
    a = _matrix(9, k, a_t, 0, 0).fill_(1.0)
    b = _matrix(k, 70, b_t, 0, 0).fill_(1.0 + 2 ** -7)
    got = _gemm(torch.zeros(9, 70, dtype=torch.bfloat16), a, b, 0.0, 1.0, None)
    assert torch.equal(got, torch.full((9, 70), k * (1 + 2 ** -7), dtype=torch.bfloat16)), got[0, 0].item()


@needs_kernels
def test_bf16_gemm_declines_what_it_does_not_take():
    x, w = torch.randn(100, 64), torch.randn(64, 64)
    with pytest.raises(RuntimeError, match="bf16 kernels do not take"):
        _gemm(torch.empty(100, 64), x, w, 0.0, 1.0, None)  # fp32
    xb = torch.randn(100, 128, dtype=torch.bfloat16)[:, ::2]  # no unit stride
    with pytest.raises(RuntimeError, match="bf16 kernels do not take"):
        _gemm(torch.empty(100, 64, dtype=torch.bfloat16), xb, w.bfloat16(), 0.0, 1.0, None)
    with pytest.raises(RuntimeError, match="kernel must be"):
        _gemm(torch.empty(100, 64), x, w, 0.0, 1.0, None, kernel="fast")


@needs_kernels
def test_the_dispatch_sends_large_bf16_products_to_the_kernels():
    """kernel="any": a bf16 product with no small dimension runs here, not in ATen (no aten::mm
    under the profiler); fp32 ones go to ATen."""
    a, b = torch.randn(100, 96, dtype=torch.bfloat16), torch.randn(96, 130, dtype=torch.bfloat16)

    def aten_gemms(dtype):
        out = torch.empty(100, 130, dtype=dtype)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            torch.ops.maven_fast._cpu_gemm_(out, a.to(dtype), b.to(dtype), 0.0, 1.0, None, "any")
        return sum(e.name in ("aten::mm", "aten::addmm") for e in prof.events())

    assert aten_gemms(torch.bfloat16) == 0
    assert aten_gemms(torch.float32) == 1


_FORCED = """
import torch, maven_fast
assert not maven_fast.build_info()["cpu_bf16_gemm"]
a = torch.randn(100, 96, dtype=torch.bfloat16)
b = torch.randn(96, 130, dtype=torch.bfloat16)
out = torch.empty(100, 130, dtype=torch.bfloat16)
try:
    torch.ops.maven_fast._cpu_gemm_(out, a, b, 0.0, 1.0, None, "bf16")
except RuntimeError as e:
    assert "need an AVX512-BF16 CPU without AMX" in str(e), e
else:
    raise AssertionError("the bf16 kernels ran below their capability")
torch.ops.maven_fast._cpu_gemm_(out, a, b, 0.0, 1.0, None, "any")  # ATen
torch.testing.assert_close(out, a @ b)
"""


def test_a_lower_forced_capability_turns_the_kernels_off():
    env = {**os.environ, "MAVEN_FAST_CPU_CAPABILITY": "AVX512"}
    subprocess.run([sys.executable, "-c", _FORCED], env=env, check=True)


def test_bf16_gemm_opcheck():
    if not _available():
        pytest.skip("needs an AVX512-BF16 CPU without AMX")
    a, b = torch.randn(70, 9, dtype=torch.bfloat16), torch.randn(9, 7, dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops.maven_fast._cpu_gemm_.default,
                          (torch.randn(70, 7, dtype=torch.bfloat16), a, b, 0.0, 0.5,
                           torch.randn(7, dtype=torch.bfloat16), "bf16"))
