"""The GEMM kernels of the CPU ops, through the test op ``maven_fast::_cpu_gemm_`` with ``kernel``
"bf16" (csrc/common/bf16_gemm.h: vdpbf16ps pair tiles on AVX512-BF16 CPUs without AMX, operands
repacked as bf16 pairs) or "fp32" (csrc/common/fp32_gemm.h: FMA tiles on AVX2 CPUs), and where the
CPU GEMM dispatch (csrc/common/cpu_gemm.h) sends products. Each kernel's tests run where it does."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import maven_fast
from maven_fast._extension import extension

pytestmark = pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built")

DTYPE = {"bf16": torch.bfloat16, "fp32": torch.float32}
WHERE = {"bf16": "an AVX512-BF16 CPU without AMX", "fp32": "an AVX2 CPU (capability AVX2)"}


def _available(kernel: str) -> bool:
    return bool(maven_fast.build_info().get(f"cpu_{kernel}_gemm"))


def _kernels():
    return [pytest.param(k, marks=pytest.mark.skipif(not _available(k), reason=f"needs {WHERE[k]}"))
            for k in DTYPE]


def _gemm(out, a, b, beta, alpha, bias, kernel):
    """beta * out + alpha * a @ b (+ bias) through maven_fast::_cpu_gemm_ (out is left unchanged)."""
    result = out.clone()
    torch.ops.maven_fast._cpu_gemm_(result, a, b, beta, alpha, bias, kernel)
    return result


def _matrix(rows, cols, transposed, pad, offset, dtype):
    """A [rows, cols] view: rows (or columns, `transposed`) of a wider buffer with `pad`
    extra elements per line, starting `offset` elements in (an odd offset or pad: words that
    are not 4-byte aligned, which the kernels repack)."""
    lines, width = (cols, rows) if transposed else (rows, cols)
    buf = torch.randn(lines, width + pad + offset, dtype=dtype)[:, offset:offset + width]
    return buf.t() if transposed else buf


# (m, k, n): several 96-row blocks and 64-column panels with remainders, odd k (a zero half
# in the last pair), tiny dimensions, and the block's shapes (k = 512, n = 512; k = tokens).
SHAPES = [(100, 512, 512), (7, 3, 5), (200, 37, 130), (65, 64, 64), (1, 1, 1), (13, 1024, 70),
          (97, 2, 17), (6, 250, 128)]


def _check(kernel, m, k, n, a_t, b_t, pad, offset, beta, alpha, with_bias):
    dtype = DTYPE[kernel]
    a = _matrix(m, k, a_t, pad, offset, dtype)
    b = _matrix(k, n, b_t, pad, offset, dtype)
    c_buffer = torch.randn(m, n + pad, dtype=dtype)
    before = c_buffer.clone()
    out = c_buffer[:, :n]  # C a column slice when padded
    bias = torch.randn(n, dtype=dtype) if with_bias else None
    torch.ops.maven_fast._cpu_gemm_(out, a, b, beta, alpha, bias, kernel)
    exact = (alpha * (a.double() @ b.double()) + (before[:, :n].double() if beta else 0)
             + (bias.double() if with_bias else 0))
    # fp32 accumulation (and one rounding to bf16), as torch's GEMM: within twice its error.
    mine = (torch.addmm(bias, a, b, alpha=alpha) if with_bias
            else torch.addmm(before[:, :n], a, b, beta=beta, alpha=alpha))
    torch_err = (mine.double() - exact).abs().max().item()
    err = (out.double() - exact).abs().max().item()
    case = (kernel, m, k, n, a_t, b_t, pad, offset, beta, alpha, with_bias)
    floor = (1e-4 if dtype == torch.bfloat16 else 1e-6) * exact.abs().max().item()
    assert err <= 2 * torch_err + floor, (case, err, torch_err)
    assert torch.equal(c_buffer[:, n:], before[:, n:]), case


@pytest.mark.parametrize("kernel", _kernels())
@pytest.mark.parametrize("a_t", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("b_t", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("pad,offset", [(0, 0), (5, 0), (4, 1)], ids=["dense", "odd-ld", "unaligned"])
def test_gemm_kernel_matches_reference(kernel, a_t, b_t, pad, offset):
    torch.manual_seed(0)
    for m, k, n in SHAPES:
        for beta, alpha, with_bias in ((0.0, 1.0, False), (1.0, 0.7, False), (0.0, -1.3, True)):
            _check(kernel, m, k, n, a_t, b_t, pad, offset, beta, alpha, with_bias)


@pytest.mark.parametrize("kernel", _kernels())
def test_gemm_kernel_leaves_the_rest_of_out_alone(kernel):
    """C is a block inside a larger matrix: the elements around it keep their values."""
    dtype = DTYPE[kernel]
    big = torch.randn(140, 200, dtype=dtype)
    a, b = torch.randn(100, 96, dtype=dtype), torch.randn(96, 130, dtype=dtype)
    before = big.clone()
    torch.ops.maven_fast._cpu_gemm_(big[20:120, 30:160], a, b, 0.0, 1.0, None, kernel)
    inside = torch.zeros_like(big, dtype=torch.bool)
    inside[20:120, 30:160] = True
    assert torch.equal(big[~inside], before[~inside])
    torch.testing.assert_close(big[20:120, 30:160].float(), (a.float() @ b.float()), rtol=0.02, atol=0.05)


@pytest.mark.skipif(not _available("bf16"), reason=f"needs {WHERE['bf16']}")
@pytest.mark.parametrize("a_t,b_t", [(False, True), (True, False)])
def test_bf16_gemm_accumulates_in_fp32(a_t, b_t):
    # Every product is 1 + 2^-7; their sum over k = 1024 is exact in fp32 and representable in
    # bf16, while a running sum in bf16 would lose the 2^-7 parts long before the end.
    k = 1024
    a = _matrix(9, k, a_t, 0, 0, torch.bfloat16).fill_(1.0)
    b = _matrix(k, 70, b_t, 0, 0, torch.bfloat16).fill_(1.0 + 2 ** -7)
    got = _gemm(torch.zeros(9, 70, dtype=torch.bfloat16), a, b, 0.0, 1.0, None, "bf16")
    assert torch.equal(got, torch.full((9, 70), k * (1 + 2 ** -7), dtype=torch.bfloat16)), got[0, 0].item()


@pytest.mark.parametrize("kernel", _kernels())
def test_gemm_kernel_declines_what_it_does_not_take(kernel):
    other = torch.float32 if kernel == "bf16" else torch.float64
    x, w = torch.randn(100, 64, dtype=other), torch.randn(64, 64, dtype=other)
    with pytest.raises(RuntimeError, match=f"{kernel} kernels do not take"):
        _gemm(torch.empty(100, 64, dtype=other), x, w, 0.0, 1.0, None, kernel)  # another dtype
    dtype = DTYPE[kernel]
    xs = torch.randn(100, 128, dtype=dtype)[:, ::2]  # no unit stride
    with pytest.raises(RuntimeError, match=f"{kernel} kernels do not take"):
        _gemm(torch.empty(100, 64, dtype=dtype), xs, w.to(dtype), 0.0, 1.0, None, kernel)
    with pytest.raises(RuntimeError, match="kernel must be"):
        _gemm(torch.empty(100, 64, dtype=dtype), x.to(dtype), w.to(dtype), 0.0, 1.0, None, "fast")


def _aten_gemms(dtype) -> int:
    """aten::mm / aten::addmm calls under the profiler for one product of no small dimension
    through the dispatch (kernel="any")."""
    a, b = torch.randn(100, 96, dtype=dtype), torch.randn(96, 130, dtype=dtype)
    out = torch.empty(100, 130, dtype=dtype)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.ops.maven_fast._cpu_gemm_(out, a, b, 0.0, 1.0, None, "any")
    torch.testing.assert_close(out, a @ b, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)
    return sum(e.name in ("aten::mm", "aten::addmm") for e in prof.events())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_the_dispatch_sends_products_where_the_kernels_run(dtype):
    """A product with no small dimension goes to this CPU's kernel for its dtype, else to ATen."""
    kernel = {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype)
    assert _aten_gemms(dtype) == (0 if kernel and _available(kernel) else 1)


_FORCED = """
import sys, torch, maven_fast
kernel, dtype = sys.argv[1], getattr(torch, sys.argv[2])
assert not maven_fast.build_info()[f"cpu_{kernel}_gemm"]
a, b = torch.randn(100, 96, dtype=dtype), torch.randn(96, 130, dtype=dtype)
out = torch.empty(100, 130, dtype=dtype)
try:
    torch.ops.maven_fast._cpu_gemm_(out, a, b, 0.0, 1.0, None, kernel)
except RuntimeError as e:
    assert sys.argv[3] in str(e), e
else:
    raise AssertionError(f"the {kernel} kernels ran below their capability")
torch.ops.maven_fast._cpu_gemm_(out, a, b, 0.0, 1.0, None, "any")  # ATen
torch.testing.assert_close(out, a @ b)
"""


@pytest.mark.parametrize("kernel,capability,message", [
    ("bf16", "AVX512", "need an AVX512-BF16 CPU without AMX"),
    ("fp32", "DEFAULT", "run on AVX2 CPUs"),
])
def test_a_lower_forced_capability_turns_the_kernels_off(kernel, capability, message):
    env = {**os.environ, "MAVEN_FAST_CPU_CAPABILITY": capability}
    dtype = "bfloat16" if kernel == "bf16" else "float32"
    subprocess.run([sys.executable, "-c", _FORCED, kernel, dtype, message], env=env, check=True)


def test_fp32_kernels_on_a_cpu_above_avx2():
    """On an AVX512 CPU the fp32 kernels are off (ATen's sgemm keeps the products); forced to AVX2
    they run there too, and their tests pass (a run on an AVX2 CPU tests them directly)."""
    capability = maven_fast.build_info()["cpu_capability"]
    if capability in ("DEFAULT", "AVX2"):
        pytest.skip(f"capability {capability}: the fp32 tests above run (or cannot run) directly")
    env = {**os.environ, "MAVEN_FAST_CPU_CAPABILITY": "AVX2"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "fp32 and not bf16 and not above_avx2"], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-3000:]


@pytest.mark.parametrize("kernel", _kernels())
def test_gemm_kernel_opcheck(kernel):
    dtype = DTYPE[kernel]
    a, b = torch.randn(70, 9, dtype=dtype), torch.randn(9, 7, dtype=dtype)
    torch.library.opcheck(torch.ops.maven_fast._cpu_gemm_.default,
                          (torch.randn(70, 7, dtype=dtype), a, b, 0.0, 0.5, torch.randn(7, dtype=dtype), kernel))


@pytest.mark.skipif(not _available("fp32"), reason=f"needs {WHERE['fp32']}")
def test_packed_operands_take_one_shared_block_not_the_pool():
    """The fp32 kernels pack every operand of a group (MBs at the block's shapes) into one scratch
    block kept across calls (csrc/common/cpu_pool.h cpu_pool_scratch): groups of other sizes
    neither allocate from the pool nor leave blocks in its cache, which made the block's peak RSS
    the sum of every group's packed operands."""
    from maven_fast.ops.cpu_gemm import pool_info, release_pool

    torch.manual_seed(0)
    sizes = [(300, 700, 200), (100, 1500, 90), (500, 400, 300)]  # packed B alone 0.3-1.1 MB
    calls = [(torch.empty(m, n), torch.randn(m, k), torch.randn(k, n)) for m, k, n in sizes]
    before = pool_info()
    for out, a, b in calls:
        torch.ops.maven_fast._cpu_gemm_(out, a, b, 0.0, 1.0, None, "fp32")
        torch.testing.assert_close(out, a @ b, rtol=1e-4, atol=1e-4)
    after = pool_info()
    assert (after["misses"], after["hits"], after["cached_bytes"]) == \
        (before["misses"], before["hits"], before["cached_bytes"]), (before, after)
    release_pool()  # frees the scratch block too: the next call grows a new one
    out, a, b = calls[1]
    torch.ops.maven_fast._cpu_gemm_(out, a, b, 0.0, 1.0, None, "fp32")
    torch.testing.assert_close(out, a @ b, rtol=1e-4, atol=1e-4)
