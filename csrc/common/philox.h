// Philox-4x32-10 (Salmon et al., SC'11): a counter-based generator, four
// 32-bit words per (key, counter), so any element of a mask can be drawn (or
// redrawn) on its own, on any device. The dropout masks of the ops (the
// cross-modal block, maven_fast::dropout_mask) keep an element iff its word
// >= dropout_threshold(p). No torch headers: nvcc compiles it alone.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace maven_fast {

// Kept iff word >= threshold; p in [0, 1).
inline uint32_t dropout_threshold(double p) {
  const double t = p * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t + 0.5);
}

struct Philox {
  uint32_t k0, k1;     // key (seed)
  uint32_t offset;     // added to the batch index (counter word 3)

  MF_HOST_DEVICE static uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t& hi) {
    const uint64_t p = static_cast<uint64_t>(a) * b;
    hi = static_cast<uint32_t>(p >> 32);
    return static_cast<uint32_t>(p);
  }

  // The four 32-bit words for counter (c0, c1, c2, c3).
  MF_HOST_DEVICE void operator()(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                 uint32_t out[4]) const {
    uint32_t key0 = k0, key1 = k1;
#pragma unroll
    for (int r = 0; r < 10; ++r) {
      uint32_t hi0, hi1;
      const uint32_t lo0 = mulhilo(0xD2511F53u, c0, hi0);
      const uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, hi1);
      const uint32_t n0 = hi1 ^ c1 ^ key0, n2 = hi0 ^ c3 ^ key1;
      c0 = n0;
      c1 = lo1;
      c2 = n2;
      c3 = lo0;
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
  }

  // Keep flags (1 = kept) of columns [j0, j0 + n) of row i, batch item b.
  // j0 must be a multiple of 4.
  MF_HOST_DEVICE void keep_row(uint32_t stream, int64_t b, int64_t i, int64_t j0, int64_t n,
                               uint32_t threshold, uint8_t* keep) const {
    uint32_t w[4];
    for (int64_t j = 0; j < n; j += 4) {
      (*this)(static_cast<uint32_t>((j0 + j) >> 2), static_cast<uint32_t>(i), stream,
              static_cast<uint32_t>(b) + offset, w);
      const int64_t m = n - j < 4 ? n - j : 4;
      for (int64_t t = 0; t < m; ++t) keep[j + t] = w[t] >= threshold;
    }
  }
};

// The generator of a call: key (seed), counter offset (low 32 bits).
MF_HOST_DEVICE Philox philox_of(uint64_t seed, uint64_t offset) {
  return Philox{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                static_cast<uint32_t>(offset)};
}

}  // namespace maven_fast
