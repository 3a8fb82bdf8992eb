// bf16 products with fp32 accumulation on AVX512-BF16 (vdpbf16ps), for the
// L1/L2-resident blocks of the attention micro-kernels. Only in the AVX512
// build of a CPU kernel source; call only when cpu_capability() is
// AVX512_BF16 (the functions carry the instruction set as a target attribute,
// so the rest of the AVX512 build stays runnable without it).
//
// Operands hold bf16 PAIRS along the reduction index p in 32-bit words
// (low half = even p), the layout vdpbf16ps multiplies:
//   gemm_pairs:  C[i, n] (+)= alpha * sum_e A2(i, e) . B2[e, n]  (fp32 C)
//   pairs_tile:  its register tile; writes through a TileOut (fp32 or bf16 C, bias)
//     A2(i, e) = (A(i, 2e), A(i, 2e+1)) = a[i * a_rs + e * a_es]   (any strides)
//     B2[e, n] = (B(2e, n), B(2e+1, n)) = b[e * ldb + n]            (n contiguous)
//   that is C = alpha * A B for A [m, k], B [k, n], kw = ceil(k / 2) words
//   (an odd k is padded with a zero half).
// Packers (bf16 or fp32 sources; fp32 rounds to nearest even):
//   rows_to_words:       W[r * ldw + e] = (S[r, 2e], S[r, 2e+1])       pairs along a row
//   row_pairs_to_words:  W[e * ldw + c] = (S[2e, c], S[2e+1, c])       pairs down a column
//   (transposing words: micro::transpose32 in micro_gemm.h)
#pragma once

#if defined(CPU_CAPABILITY_AVX512)

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "common/micro_gemm.h"

#ifndef MAVEN_FAST_CPU_NS
#error "micro_gemm_bf16.h is for CPU kernel sources compiled per capability"
#endif

#define MF_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace maven_fast::MAVEN_FAST_CPU_NS::micro_bf16 {

using BF16 = c10::BFloat16;
using micro::mask16;

// 16 bf16 of `src` (fp32 rounded to nearest even, or bf16 as is) in a 256-bit
// register, reading only the first `cnt` (the rest zero).
MF_BF16_TARGET inline __m256i load16_bf16(const float* src, int64_t cnt) {
  return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(cnt), src));
}
MF_BF16_TARGET inline __m256i load16_bf16(const BF16* src, int64_t cnt) {
  return _mm256_maskz_loadu_epi16(mask16(cnt), src);
}

// 16 bf16 of `src` (the first `cnt`, the rest zero) widened to fp32 (exact).
MF_BF16_TARGET inline __m512 widen16(const BF16* src, int64_t cnt) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load16_bf16(src, cnt)), 16));
}

// Where a tile's results go: C[i, j] (+)= alpha * acc[i, j] (+ bias[j]), in
// fp32 (c) or bf16 (c_bf16, rounded to nearest even from fp32); pointers at the
// tile's first row and column.
struct TileOut {
  float* c = nullptr;
  BF16* c_bf16 = nullptr;
  int64_t ldc = 0;
  const BF16* bias = nullptr;  // [columns] or null
  bool accumulate = false;
};

// Register tile: up to kMR (micro_gemm.h's 6) rows x NV <= 4 vectors of 16 fp32
// (24 of the 32 registers). A block narrower than 64 columns gets a tile of
// ceil(columns / 16) vectors: a full-width tile would multiply the masked-off
// lanes too (half of its products at 32 columns, the keys of a short item).
using micro::kMR;
constexpr int kMaxNV = 4;
constexpr int64_t kNC = kMaxNV * 16;

// The column vectors are named, not an array: with an array of B vectors and
// loops over them GCC 12 -O3 kept the 24 accumulators in memory as well, storing
// each on every step of the reduction (seen with objdump; slower than fp32).
template <int MR, int NV>
MF_BF16_TARGET __attribute__((noinline, noclone)) void pairs_tile(int64_t kw, float alpha, const uint32_t* a,
                                                                  int64_t a_rs, int64_t a_es, const uint32_t* b,
                                                                  int64_t ldb, const TileOut& out, int64_t nc) {
  static_assert(NV >= 1 && NV <= kMaxNV, "one to four column vectors");
  const __mmask16 mask[kMaxNV] = {mask16(nc), mask16(nc - 16), mask16(nc - 32), mask16(nc - 48)};
  __m512 r[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) r[i][v] = _mm512_setzero_ps();
  }
#pragma GCC unroll 1
  for (int64_t e = 0; e < kw; ++e) {
    const uint32_t* be = b + e * ldb;
    const __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(mask[0], be);
    __m512bh b1 = b0, b2 = b0, b3 = b0;  // loaded below where the tile has them
    if constexpr (NV > 1) b1 = (__m512bh)_mm512_maskz_loadu_epi32(mask[1], be + 16);
    if constexpr (NV > 2) b2 = (__m512bh)_mm512_maskz_loadu_epi32(mask[2], be + 32);
    if constexpr (NV > 3) b3 = (__m512bh)_mm512_maskz_loadu_epi32(mask[3], be + 48);
    const uint32_t* ae = a + e * a_es;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(ae[i * a_rs]));
      r[i][0] = _mm512_dpbf16_ps(r[i][0], av, b0);
      if constexpr (NV > 1) r[i][1] = _mm512_dpbf16_ps(r[i][1], av, b1);
      if constexpr (NV > 2) r[i][2] = _mm512_dpbf16_ps(r[i][2], av, b2);
      if constexpr (NV > 3) r[i][3] = _mm512_dpbf16_ps(r[i][3], av, b3);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  __m512 bias[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) bias[v] = out.bias ? widen16(out.bias + v * 16, nc - v * 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512 o = _mm512_fmadd_ps(r[i][v], va, bias[v]);
      if (out.c_bf16) {
        BF16* ci = out.c_bf16 + i * out.ldc + v * 16;
        if (out.accumulate) o = _mm512_add_ps(o, widen16(ci, nc - v * 16));
        _mm256_mask_storeu_epi16(ci, mask[v], (__m256i)_mm512_cvtneps_pbh(o));
      } else {
        float* ci = out.c + i * out.ldc + v * 16;
        if (out.accumulate) o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(mask[v], ci));
        _mm512_mask_storeu_ps(ci, mask[v], o);
      }
    }
  }
}

MF_BF16_TARGET inline void gemm_pairs(int64_t m, int64_t n, int64_t kw, float alpha, const uint32_t* a,
                                      int64_t a_rs, int64_t a_es, const uint32_t* b, int64_t ldb,
                                      bool accumulate, float* c, int64_t ldc) {
  for (int64_t j0 = 0; j0 < n; j0 += kNC) {
    const int64_t nc = std::min(kNC, n - j0);
    micro::with_count<1, kMaxNV>((nc + 15) / 16, [&]<int NV>() {
      micro::for_row_tiles<kMR>(m, [&]<int R>(int64_t i) {
        TileOut out;
        out.c = c + i * ldc + j0;
        out.ldc = ldc;
        out.accumulate = accumulate;
        pairs_tile<R, NV>(kw, alpha, a + i * a_rs, a_rs, a_es, b + j0, ldb, out, nc);
      });
    });
  }
}

// sum_i x[i] y[i] over n bf16 elements, products and sums in fp32.
MF_BF16_TARGET inline float dot(const BF16* x, const BF16* y, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(widen16(x + i, n - i), widen16(y + i, n - i), acc);
  return _mm512_reduce_add_ps(acc);
}

template <typename Src>
MF_BF16_TARGET inline void rows_to_words(const Src* src, int64_t rows, int64_t cols, int64_t ld, uint32_t* dst,
                                         int64_t ldw) {
  for (int64_t r = 0; r < rows; ++r) {
    const Src* s = src + r * ld;
    auto* d = reinterpret_cast<uint16_t*>(dst + r * ldw);
    for (int64_t c = 0; c < cols; c += 16) _mm256_mask_storeu_epi16(d + c, mask16(cols - c), load16_bf16(s + c, cols - c));
    if (cols & 1) d[cols] = 0;  // the zero half of the last pair
  }
}

template <typename Src>
MF_BF16_TARGET inline void row_pairs_to_words(const Src* src, int64_t rows, int64_t cols, int64_t ld,
                                              uint32_t* dst, int64_t ldw) {
  // (lo_0..lo_15, hi_0..hi_15) -> (lo_0, hi_0, lo_1, hi_1, ...)
  alignas(64) static constexpr uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                           21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                           11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kInterleave);
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t e = 0; 2 * e < rows; ++e) {
    const Src* lo = src + (2 * e) * ld;
    const bool has_hi = 2 * e + 1 < rows;
    uint32_t* d = dst + e * ldw;
    for (int64_t c = 0; c < cols; c += 16) {
      const int64_t cnt = std::min<int64_t>(16, cols - c);
      const __m256i l = load16_bf16(lo + c, cnt);
      const __m256i h = has_hi ? load16_bf16(lo + ld + c, cnt) : zero;
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(l), h, 1);
      _mm512_mask_storeu_epi32(d + c, mask16(cnt), _mm512_permutexvar_epi16(idx, both));
    }
  }
}

}  // namespace maven_fast::MAVEN_FAST_CPU_NS::micro_bf16

#endif  // CPU_CAPABILITY_AVX512
