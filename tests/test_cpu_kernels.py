"""The CPU ops' building blocks: the skinny GEMM kernels (csrc/common/skinny_gemm.h,
through the test op ``maven_fast::_cpu_gemm_``) and the caching pool of their
buffers (csrc/common/cpu_pool.h)."""
from __future__ import annotations

import pytest
import torch

from maven_fast._extension import extension

pytestmark = pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built")

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _gemm(out, *args, kernel="skinny"):
    """beta * out + alpha * a @ b (+ bias) through maven_fast::_cpu_gemm_ (out is left unchanged)."""
    result = out.clone()
    torch.ops.maven_fast._cpu_gemm_(result, *args, kernel)
    return result


def _operands(kind, m, k, n, dtype, strided):
    """(a, b) of ``kind`` for out [m, n] = a [m, k] @ b [k, n], in the layout the kind reads;
    ``strided``: every operand a column slice of a wider matrix (leading dimension > width)."""
    pad = 5 if strided else 0

    def rows(r, c):  # row-major [r, c] with leading dimension c + pad
        return torch.randn(r, c + pad, dtype=dtype)[:, :c]

    if kind == "NT":  # a = x rows, b = W^T with W [n, k] rows
        return rows(m, k), rows(n, k).t()
    if kind == "NN":  # a = g rows, b = W [k, n] rows
        return rows(m, k), rows(k, n)
    return rows(k, m).t(), rows(k, n)  # TN: a = G^T with G [k, m] rows, b = X [k, n] rows


def _reference(out, a, b, beta, alpha, bias):
    r = alpha * (a.double() @ b.double())
    if beta:
        r = r + out.double()
    if bias is not None:
        r = r + bias.double()
    return r


# Shapes: (m, k, n); the small dimension (m for NT/NN, k for TN) from 1 to the limit 64,
# the others odd and not multiples of a vector or of a work unit.
SHAPES = {
    "NT": [(16, 512, 512), (1, 7, 3), (3, 37, 129), (64, 100, 70), (17, 33, 65)],
    "NN": [(16, 512, 512), (1, 7, 3), (3, 37, 129), (64, 100, 70), (17, 200, 65)],
    "TN": [(512, 16, 512), (3, 1, 7), (129, 3, 37), (70, 64, 100), (65, 17, 33)],
}


@pytest.mark.parametrize("kind", ["NT", "NN", "TN"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strided", [False, True])
def test_skinny_gemm_matches_reference(kind, dtype, strided):
    for m, k, n in SHAPES[kind]:
        a, b = _operands(kind, m, k, n, dtype, strided)
        out = torch.randn(m, n, dtype=dtype)
        bias = torch.randn(n, dtype=dtype) if kind == "NT" else None
        for beta, alpha, bi in ((0.0, 1.0, None), (1.0, 0.7, None), (0.0, -1.3, bias)):
            if bi is None and kind == "NT" and beta == 0.0 and alpha == 1.0:
                bi = bias
            got = _gemm(out, a, b, beta, alpha, bi)
            ref = _reference(out, a, b, beta, alpha, bi)
            assert got.dtype == dtype and got.shape == (m, n)
            err = (got.double() - ref).abs().max().item()
            if dtype == torch.float32:
                assert err <= 2e-6 * ref.abs().max().item() + 1e-6, (kind, m, k, n, beta, alpha, err)
            else:
                # Within twice torch's own error in this dtype (fp32 accumulation, one rounding).
                mine = torch.addmm(bi, a, b, beta=0, alpha=alpha) if bi is not None else (
                    torch.addmm(out, a, b, beta=beta, alpha=alpha))
                err_torch = (mine.double() - ref).abs().max().item()
                assert err <= 2 * err_torch + 1e-4 * ref.abs().max().item(), (kind, m, k, n, err, err_torch)


@pytest.mark.parametrize("kind", ["NT", "NN", "TN"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_skinny_gemm_accumulates_in_fp32(kind, dtype):
    # Every product is 1 + 2^-7; their sum over the reduction is exact in fp32 and
    # representable in the output dtype, while a running sum in bf16/fp16 loses the
    # 2^-7 parts (and stalls) long before the end.
    k = 64 if kind == "TN" else 1024
    m, n = 4, 8
    a, b = _operands(kind, m, k, n, dtype, strided=False)
    a.fill_(1.0)
    b.fill_(1.0 + 2 ** -7)
    got = _gemm(torch.zeros(m, n, dtype=dtype), a, b, 0.0, 1.0, None)
    assert torch.equal(got, torch.full((m, n), k * (1 + 2 ** -7), dtype=dtype)), got[0, 0].item()


def test_skinny_gemm_declines_other_shapes():
    x = torch.randn(65, 32)
    w = torch.randn(32, 32)
    with pytest.raises(RuntimeError, match="skinny kernels do not take"):
        _gemm(torch.empty(65, 32), x, w.t(), 0.0, 1.0, None)  # 65 rows, large reduction
    got = _gemm(torch.empty(65, 32), x, w.t(), 0.0, 1.0, None, kernel="any")  # ATen
    torch.testing.assert_close(got, x @ w.t())
    with pytest.raises(RuntimeError, match="skinny kernels do not take"):
        _gemm(torch.empty(4, 32, dtype=torch.float64), torch.randn(4, 32, dtype=torch.float64),
              torch.randn(32, 32, dtype=torch.float64), 0.0, 1.0, None)


def test_skinny_gemm_opcheck():
    a, b = torch.randn(5, 9), torch.randn(9, 7)
    torch.library.opcheck(torch.ops.maven_fast._cpu_gemm_.default,
                          (torch.randn(5, 7), a, b, 0.0, 0.5, torch.randn(7), "any"))
    torch.library.opcheck(torch.ops.maven_fast._cpu_gemm_.default, (torch.randn(5, 7), a, b, 1.0, 0.5, None, "skinny"))


# --------------------------------------------------------------------------- pool
def test_pool_reuses_blocks_and_keeps_live_tensors_apart():
    from maven_fast.ops.cpu_gemm import pool_info as cpu_pool_info

    from maven_fast.benchmark.cross_modal_suite import make_inputs
    from maven_fast.nn import CrossModalBlock

    block = CrossModalBlock(64, 2, attn_dropout=0.0, dropout=0.0, backend="cpu")
    xs, lens, cot = make_inputs(300, 1, 1, False, "cpu", batch=4, embed=64)

    def grads():
        out = block(*xs, *lens)
        return torch.autograd.grad(out, xs + list(block.parameters()), cot, allow_unused=True)

    first = grads()
    before = cpu_pool_info()
    second = grads()  # `first` is alive: its blocks must not be handed out again
    for g1, g2 in zip(first, second):
        if g1 is not None and g1.nbytes >= 256 << 10:
            assert g1.data_ptr() != g2.data_ptr()
        if g1 is not None:
            torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    del first, second
    third = grads()  # now the freed blocks come back
    after = cpu_pool_info()
    assert after["hits"] > before["hits"]
    assert after["in_use_bytes"] > 0 and after["cached_bytes"] >= 0
    # A pooled tensor is an ordinary resizable CPU tensor.
    big = next(g for g in third if g is not None and g.nbytes >= 256 << 10)
    ref = big.clone()
    big.resize_(big.numel() * 2)
    torch.testing.assert_close(big[: ref.numel()], ref.reshape(-1))


def _block_grads(t_v=300):
    from maven_fast.benchmark.cross_modal_suite import make_inputs
    from maven_fast.nn import CrossModalBlock

    torch.manual_seed(0)
    block = CrossModalBlock(64, 2, attn_dropout=0.0, dropout=0.0, backend="cpu")
    xs, lens, cot = make_inputs(t_v, 1, 1, False, "cpu", batch=4, embed=64)
    out = block(*xs, *lens)
    return torch.autograd.grad(out, xs, cot)  # dx_v: 4 x 300 x 64 fp32 = 300 KB, from the pool


def test_pool_limit_and_release():
    from maven_fast.ops.cpu_gemm import pool_info, release_pool, set_pool_limit

    limit = pool_info()["limit_bytes"]
    try:
        release_pool()
        assert pool_info()["cached_bytes"] == 0
        set_pool_limit(0)  # the pool is off: buffers come from at::empty and go back to the system
        g = _block_grads()
        del g
        assert pool_info()["cached_bytes"] == 0
        set_pool_limit(limit)
        in_use = pool_info()["in_use_bytes"]
        g = _block_grads()
        assert pool_info()["in_use_bytes"] >= in_use + g[0].nbytes
        del g
        assert pool_info()["cached_bytes"] >= 300 << 10
        with pytest.raises(RuntimeError, match=">= 0"):
            set_pool_limit(-1)
    finally:
        set_pool_limit(limit)
