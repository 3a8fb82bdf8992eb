r"""Philox-4x32-10 dropout masks for the Triton cross-modal kernels.

The same generator, counters and threshold as csrc/cross_modal/cross_modal_math.h,
so the Triton and C++ backends draw identical masks from the same ``rng``:

    key     = (lo32(seed), hi32(seed))
    counter = (j / 4, i, stream, b + offset)       word j % 4 of the output
    keep    = word >= threshold(p),  threshold(p) = round(p 2^32)

for element (stream, row i, column j) of batch item b. Streams: attention
probabilities of pathway p, head h: 16 h + p; output dropout of modality m:
6 + m. A kept element is scaled by 1 / (1 - p).

The seed and offset are read on the device from the int64 ``rng`` tensor
[seed, offset] (no host read, so the ops trace under torch.compile).
"""
from __future__ import annotations

import triton
import triton.language as tl


def dropout_threshold(p: float) -> int:
    """round(p * 2^32), saturated to 2^32 - 1 (cross_modal_math.h: dropout_threshold)."""
    t = p * 4294967296.0
    return 0xFFFFFFFF if t >= 4294967295.0 else int(t + 0.5)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """The four 32-bit words of Philox-4x32-10 (Salmon et al., SC'11) for counter
    (c0, c1, c2, c3) and key (k0, k1); all uint32, tensors broadcast."""
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, 0xD2511F53)
        lo0 = c0 * 0xD2511F53
        hi1 = tl.umulhi(c2, 0xCD9E8D57)
        lo1 = c2 * 0xCD9E8D57
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def load_rng(rng_ptr):
    """(k0, k1, offset) as uint32 from the int64 tensor [seed, offset]."""
    seed = tl.load(rng_ptr)
    return seed.to(tl.uint32), (seed >> 32).to(tl.uint32), tl.load(rng_ptr + 1).to(tl.uint32)


@triton.jit
def keep_block(k0, k1, offset, stream, item, rows, col0, threshold,
               BM: tl.constexpr, BN: tl.constexpr):
    """Keep flags [BM, BN] of columns col0 .. col0 + BN (col0 % 4 == 0) of `rows` [BM].

    `item` (the batch index b) is a scalar or a [BM, 1] tensor (one per row)."""
    quads = (col0 // 4 + tl.arange(0, BN // 4)).to(tl.uint32)
    zero = tl.full([BM, BN // 4], 0, tl.uint32)
    c0 = zero + quads[None, :]
    c1 = zero + rows.to(tl.uint32)[:, None]
    c3 = zero + (item.to(tl.uint32) + offset)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, zero + stream.to(tl.uint32), c3, k0, k1)
    # word t of quad q is column 4 q + t: interleave the four [BM, BN/4] words.
    w = tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), [BM, BN])
    return w >= threshold.to(tl.uint32)


@triton.jit
def keep_column0(k0, k1, offset, stream, item, rows, threshold):
    """Keep flags of column 0 of `rows` (a [BM] tensor); `item` scalar or [BM]."""
    zero = tl.full(rows.shape, 0, tl.uint32)
    w0, _, _, _ = philox4x32_10(zero, zero + rows.to(tl.uint32), zero + stream.to(tl.uint32),
                                zero + item.to(tl.uint32) + offset, k0, k1)
    return w0 >= threshold.to(tl.uint32)
