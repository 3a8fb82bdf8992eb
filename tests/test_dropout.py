"""``maven_fast.ops.dropout`` / ``maven_fast.nn.Dropout``: the counter-based keep mask of
``maven_fast::dropout_mask`` (csrc/dropout/) against a Python Philox-4x32-10, its statistics,
its independence of the thread count and CPU capability, and the module."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import maven_fast
from maven_fast import BackendUnavailable, MavenConfig
from maven_fast._extension import extension
from maven_fast.nn import Dropout
from maven_fast.ops import dropout

pytestmark = pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built")

MASK32 = 0xFFFFFFFF


def philox4x32_10(key: tuple[int, int], counter: tuple[int, int, int, int]) -> list[int]:
    """Philox-4x32-10 as Salmon et al. define it (Random123), in Python integers."""
    (k0, k1), (c0, c1, c2, c3) = key, counter
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
        k0, k1 = (k0 + 0x9E3779B9) & MASK32, (k1 + 0xBB67AE85) & MASK32
    return [c0, c1, c2, c3]


def reference_keep(n: int, p: float, seed: int) -> torch.Tensor:
    threshold = min(round(p * 2**32), MASK32)
    key = (seed & MASK32, (seed >> 32) & MASK32)
    words = [w for block in range((n + 3) // 4)
             for w in philox4x32_10(key, (block & MASK32, block >> 32, 0, 0))]
    return torch.tensor([w >= threshold for w in words[:n]])


def test_python_philox_is_the_published_one():
    # Random123's known-answer vectors for philox4x32_10
    assert philox4x32_10((0, 0), (0, 0, 0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox4x32_10((0xA4093822, 0x299F31D0), (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.parametrize("n,p,seed", [(37, 0.3, 12345), (1000, 0.5, 2**40 + 7), (130, 0.9, 1)])
def test_mask_is_philox(n, p, seed):
    """Element i kept iff word i % 4 of Philox(seed, (i / 4, 0, 0, 0)) >= p 2^32; kept = 1 / (1 - p).
    Sizes cover several 16-block groups of the vector lanes and a ragged tail."""
    mask = torch.ops.maven_fast.dropout_mask(torch.empty(n), p, torch.tensor(seed))
    keep = reference_keep(n, p, seed)
    assert torch.equal(mask != 0, keep)
    assert torch.all(mask[keep] == torch.tensor(1 / (1 - p), dtype=torch.float32))


def test_mask_does_not_depend_on_threads_or_cpu_capability():
    like, seed = torch.empty(5000), torch.tensor(99)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.maven_fast.dropout_mask(like, 0.4, seed)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, torch.ops.maven_fast.dropout_mask(like, 0.4, seed))
    code = ("import torch, maven_fast; m = torch.ops.maven_fast.dropout_mask(torch.empty(5000), 0.4, "
            "torch.tensor(99)); print(''.join('1' if v else '0' for v in (m != 0).tolist()))")
    env = dict(os.environ, MAVEN_FAST_CPU_CAPABILITY="DEFAULT")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "".join("1" if v else "0" for v in (one != 0).tolist())


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_statistics(p):
    n = 1 << 20
    keep = torch.ops.maven_fast.dropout_mask(torch.empty(n), p, torch.tensor(7)) != 0
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(keep.float().mean().item() - (1 - p)) < 6 * sigma
    k = keep.float() - keep.float().mean()
    for lag in (1, 3, 4, 5, 64):  # within a block of four words, across blocks and lane groups
        corr = (k[:-lag] * k[lag:]).mean() / k.var()
        assert abs(corr.item()) < 6 / n**0.5, (lag, corr.item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dropout_values_and_gradient(dtype):
    torch.manual_seed(0)
    # in [0.5, 1.5): no zero input, so y == 0 exactly where the mask dropped (torch 2.11's bf16 randn
    # gives exact zeros, which looked dropped)
    x = (torch.rand(64, 33) + 0.5).to(dtype).requires_grad_()
    y = dropout(x, 0.25, backend="cpu")
    kept = y != 0
    scale = torch.tensor(1 / 0.75, dtype=dtype)
    assert 0.6 < kept.float().mean().item() < 0.9
    torch.testing.assert_close(y[kept], (x * scale)[kept], rtol=0, atol=0)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, torch.where(kept, scale, torch.zeros((), dtype=dtype)), rtol=0, atol=0)


def test_dropout_follows_torch_manual_seed_and_draws_new_masks():
    x = torch.randn(4096)
    torch.manual_seed(3)
    a, b = dropout(x, 0.5, backend="cpu"), dropout(x, 0.5, backend="cpu")
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x, 0.5, backend="cpu"))
    assert not torch.equal(a, b)


def test_dropout_edge_cases_and_errors():
    x = torch.randn(10, 3)
    assert dropout(x, 0.5, training=False, backend="cpu") is x
    assert dropout(x, 0.0, backend="cpu") is x
    assert torch.equal(dropout(x, 1.0, backend="cpu"), torch.zeros_like(x))
    assert dropout(torch.empty(0, 3), 0.5, backend="cpu").shape == (0, 3)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        dropout(x, 1.5, backend="cpu")
    with pytest.raises(RuntimeError, match=r"p must be in \[0, 1\), got 1"):
        torch.ops.maven_fast.dropout_mask(x, 1.0, torch.tensor(0))
    with pytest.raises(RuntimeError, match="`seed` must be one int64 CPU element"):
        torch.ops.maven_fast.dropout_mask(x, 0.5, torch.tensor([1, 2]))
    with pytest.raises(BackendUnavailable, match="backend 'cpu' runs CPU tensors, got tensors on meta"):
        dropout(torch.empty(3, device="meta"), 0.5, backend="cpu")


def test_dropout_mask_opcheck():
    torch.library.opcheck(torch.ops.maven_fast.dropout_mask.default, (torch.randn(6, 5), 0.3, torch.tensor(11)))


def test_dropout_compiles_fullgraph_with_the_same_masks():
    torch._dynamo.reset()
    layer = Dropout(0.3, backend="cpu")
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(40, 30)
    torch.manual_seed(8)
    got = compiled(x)
    torch.manual_seed(8)
    assert torch.equal(got, layer(x)) and (got == 0).any()


def test_dropout_module():
    layer = Dropout(0.4, backend="cpu")
    assert isinstance(layer, torch.nn.Dropout) and layer.p == 0.4
    x = torch.randn(200, 50)
    y = layer(x)
    assert 0.3 < (y == 0).float().mean().item() < 0.5
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    layer.backend = "eager"  # nn.Dropout itself: torch's masks under the same seed
    torch.manual_seed(5)
    got = layer(x)
    torch.manual_seed(5)
    assert torch.equal(got, torch.nn.functional.dropout(x, 0.4, True))


def test_maven_set_backend_reaches_every_dropout_layer():
    model = maven_fast.MAVEN(MavenConfig.paper(), backend="cpu")
    layers = [m for m in model.modules() if isinstance(m, Dropout)]
    assert len(layers) >= 4 and {m.backend for m in layers} == {"cpu"}
    model.set_backend("eager")
    assert {m.backend for m in layers} == {"eager"}
