// Six-pathway cross-modal block: the pathway table and the dropout RNG, shared
// by the CPU and CUDA kernels (no torch headers, so nvcc compiles it alone).
//
// Pathway p = x2y: queries from modality x, keys and values from modality y.
// Modalities: 0 = video, 1 = audio, 2 = text. Pathway order (also the order of
// every per-pathway argument of the ops): v2a, v2t, a2v, a2t, t2v, t2a.
//
// Dropout masks come from Philox-4x32-10 (Salmon et al., SC'11), a counter-
// based generator: element (stream, row i, column j) of a mask uses
//   key     = (lo32(seed), hi32(seed))
//   counter = (j / 4, i, stream, b + offset)        word j % 4 of the output
// and is kept iff that 32-bit word >= threshold(p) = round(p * 2^32). A kept
// element is scaled by 1 / (1 - p). Streams: attention probabilities of
// pathway p, head h: stream = 16 * h + p; output dropout of modality m:
// stream = 6 + m. The backward regenerates exactly the forward's mask.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MF_HOST_DEVICE inline
#endif

namespace maven_fast::cross_modal {

constexpr int kNumModalities = 3;
constexpr int kNumPathways = 6;
// Query (x) and key/value (y) modality of each pathway x2y.
constexpr int kQueryModality[kNumPathways] = {0, 0, 1, 1, 2, 2};
constexpr int kKeyModality[kNumPathways] = {1, 2, 0, 2, 0, 1};

// How a pathway is computed (chosen by the caller, see maven_fast/ops/cross_modal.py).
enum PathwayMode : int64_t {
  // Q/K/V projections, attention with head size D/H, out_proj per query row.
  kGeneral = 0,
  // Key length Ty == 1: softmax over one key is 1 (0 if masked), so the output
  // does not depend on the query; no Q, no K projection, out_proj once per item.
  kKeyLen1 = 1,
  // Weight absorption: scores q_h W_k,h y_j / sqrt(d_h) and values y_j are
  // taken on the raw key sequence y (head size D, K = V = y shared by heads);
  // W_v,h is applied after the weighted sum. The long side is never projected.
  kAbsorbed = 2,
};

// kKeyModality[p] as arithmetic (device code cannot index the host array).
MF_HOST_DEVICE constexpr int key_modality(int pathway) {
  return (1 | 2 << 2 | 0 << 4 | 2 << 6 | 0 << 8 | 1 << 10) >> (2 * pathway) & 3;
}
static_assert(key_modality(0) == kKeyModality[0] && key_modality(1) == kKeyModality[1] &&
              key_modality(2) == kKeyModality[2] && key_modality(3) == kKeyModality[3] &&
              key_modality(4) == kKeyModality[4] && key_modality(5) == kKeyModality[5]);

constexpr uint32_t attention_stream(int pathway, int64_t head) {
  return static_cast<uint32_t>(16 * head + pathway);
}
constexpr uint32_t output_stream(int modality) { return static_cast<uint32_t>(6 + modality); }

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

}  // namespace maven_fast::cross_modal
