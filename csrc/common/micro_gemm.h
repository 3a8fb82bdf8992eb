// Small single-threaded GEMMs on L1/L2-resident blocks, vectorised with
// at::vec, for use inside an at::parallel_for task (where calling BLAS would
// pay its dispatch cost per block). Include only from CPU kernel sources
// (compiled per CPU capability); everything here is in MAVEN_FAST_CPU_NS.
//
//   gemm_nn:  C[i, n] (+)= alpha * sum_p A(i, p) B[p, n]
//             A(i, p) = a[i * a_rs + p * a_ps] (any strides, so A^T is free),
//             B row-major (ldb), C row-major (ldc)
//   gemm_nt:  C[i, j]  = alpha * sum_p A[i, p] B[j, p]
//             A, B row-major with p contiguous, plus B^T packed once by the
//             caller (pack_transposed) for all the row blocks that reuse it;
//             tiny m uses dot products on B's rows instead
//   pack_transposed:  Bt[p, j] = B[j, p]  (fp32 on AVX512: transpose32, 16 x 16
//             register transposes of 32-bit elements, also used for bf16 pairs)
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#ifndef MAVEN_FAST_CPU_NS
#error "micro_gemm.h is for CPU kernel sources compiled per capability"
#endif

namespace maven_fast::MAVEN_FAST_CPU_NS::micro {

using at::vec::Vectorized;

// Register tile: MR rows x NV vectors of C.
template <typename T>
constexpr int kNV = (sizeof(Vectorized<T>) >= 64) ? 4 : 2;

// The first `cnt` lanes of a vector (0: none), as a load mask fixed before the
// reduction loop: branch-free masked loads and stores on AVX512 and AVX2. ATen's
// loadu(ptr, count) branches on the count inside the loop, and with it GCC 12 -O3
// kept the partial tile's accumulators in memory (a store after every FMA).
template <typename T>
struct Lanes {
  int cnt = 0;
  Lanes() = default;
  explicit Lanes(int n) : cnt(n) {}
  Vectorized<T> load(const T* p) const { return Vectorized<T>::loadu(p, cnt); }
  void store(const Vectorized<T>& x, T* p) const { x.store(p, cnt); }
};
#if defined(CPU_CAPABILITY_AVX512)
// Lanes [0, cnt) of 16 (all when cnt >= 16).
inline __mmask16 mask16(int64_t cnt) {
  return static_cast<__mmask16>(cnt >= 16 ? 0xFFFFu : (1u << std::max<int64_t>(cnt, 0)) - 1u);
}

template <>
struct Lanes<float> {
  __mmask16 mask = 0;
  Lanes() = default;
  explicit Lanes(int n) : mask(mask16(n)) {}
  Vectorized<float> load(const float* p) const { return _mm512_maskz_loadu_ps(mask, p); }
  void store(const Vectorized<float>& x, float* p) const { _mm512_mask_storeu_ps(p, mask, x); }
};
template <>
struct Lanes<double> {
  __mmask8 mask = 0;
  Lanes() = default;
  explicit Lanes(int n) : mask(static_cast<__mmask8>(n >= 8 ? 0xFFu : (1u << std::max(n, 0)) - 1u)) {}
  Vectorized<double> load(const double* p) const { return _mm512_maskz_loadu_pd(mask, p); }
  void store(const Vectorized<double>& x, double* p) const { _mm512_mask_storeu_pd(p, mask, x); }
};
#elif defined(CPU_CAPABILITY_AVX2)
template <>
struct Lanes<double> {
  __m256i mask = _mm256_setzero_si256();
  Lanes() = default;
  explicit Lanes(int n) : mask(_mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))) {}
  Vectorized<double> load(const double* p) const { return _mm256_maskload_pd(p, mask); }
  void store(const Vectorized<double>& x, double* p) const { _mm256_maskstore_pd(p, mask, x); }
};
template <>
struct Lanes<float> {
  __m256i mask = _mm256_setzero_si256();
  Lanes() = default;
  explicit Lanes(int n)
      : mask(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))) {}
  Vectorized<float> load(const float* p) const { return _mm256_maskload_ps(p, mask); }
  void store(const Vectorized<float>& x, float* p) const { _mm256_maskstore_ps(p, mask, x); }
};
#endif

// f.template operator()<N>() for the N in [Lo, Hi] equal to n (n outside: the
// nearer end): a count known at run time (rows left over, column vectors of a
// partial block) as the template argument of a register tile.
template <int Lo, int Hi, typename F>
inline void with_count(int64_t n, const F& f) {
  if constexpr (Lo < Hi) {
    if (n > Lo) {
      with_count<Lo + 1, Hi>(n, f);
      return;
    }
  }
  f.template operator()<Lo>();
}

// tile.template operator()<R>(i) over the row blocks [i, i + R) of m rows:
// blocks of MR rows, then the rows left over as one block of fewer.
template <int MR, typename Tile>
inline void for_row_tiles(int64_t m, const Tile& tile) {
  int64_t i = 0;
  for (; i + MR <= m; i += MR) tile.template operator()<MR>(i);
  if constexpr (MR > 1) {
    if (i < m) with_count<1, MR - 1>(m - i, [&]<int R>() { tile.template operator()<R>(i); });
  }
}

// Loops unrolled by pragma and partial columns loaded through Lanes: otherwise
// GCC 12 -O3 kept the accumulators of the partial tile in memory (a load and a
// store around every FMA; seen with objdump in the built extension). A partial
// tile (Full false) has the NV <= kNV vectors its columns need: a full-width
// one would multiply its masked-off lanes too.
template <typename T, int MR, int NV, bool Full>
__attribute__((noinline, noclone)) void nn_tile(int64_t k, T alpha, const T* a, int64_t a_rs, int64_t a_ps,
                                                const T* b, int64_t ldb, bool accumulate, T* c, int64_t ldc,
                                                int64_t ncols) {
  using V = Vectorized<T>;
  constexpr int VS = V::size();
  static_assert(NV >= 1 && NV <= kNV<T> && (NV == kNV<T> || !Full), "a full tile has kNV vectors");
  int cnt[NV];
  for (int v = 0; v < NV; ++v) cnt[v] = Full ? VS : static_cast<int>(std::clamp<int64_t>(ncols - v * VS, 0, VS));
  Lanes<T> lanes[NV];
  for (int v = 0; v < NV; ++v) lanes[v] = Lanes<T>(cnt[v]);
  V r[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) r[i][v] = V(T(0));
  }
#pragma GCC unroll 1
  for (int64_t p = 0; p < k; ++p) {
    const T* bp = b + p * ldb;
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = Full ? V::loadu(bp + v * VS) : lanes[v].load(bp + v * VS);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V av(a[i * a_rs + p * a_ps]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) r[i][v] = at::vec::fmadd(av, bv[v], r[i][v]);
    }
  }
  const V va(alpha);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      V out = r[i][v] * va;
      if (accumulate) out = out + (Full ? V::loadu(ci + v * VS) : lanes[v].load(ci + v * VS));
      if (Full) {
        out.store(ci + v * VS);
      } else {
        lanes[v].store(out, ci + v * VS);
      }
    }
  }
}

// Rows of C per register tile: MR x kNV vectors of accumulators (12 of the 16
// vector registers below AVX512, 24 of the 32 with it), each B vector loaded
// once per MR rows.
constexpr int kMR = 6;

template <typename T, int NV, bool Full>
inline void gemm_nn_cols(int64_t m, int64_t k, T alpha, const T* a, int64_t a_rs, int64_t a_ps,
                         const T* b, int64_t ldb, bool accumulate, T* c, int64_t ldc, int64_t nc) {
  for_row_tiles<kMR>(m, [&]<int R>(int64_t i) {
    nn_tile<T, R, NV, Full>(k, alpha, a + i * a_rs, a_rs, a_ps, b, ldb, accumulate, c + i * ldc, ldc, nc);
  });
}

// The fewest vectors a partial column block's tile has: one on AVX512 (up to
// kNV = 4); below it both of the two, since GCC 12 -O3 kept the one-vector
// tile's accumulators in memory in its strided loop.
template <typename T>
constexpr int kMinPartialNV = kNV<T> >= 4 ? 1 : kNV<T>;

template <typename T>
inline void gemm_nn(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t a_rs,
                    int64_t a_ps, const T* b, int64_t ldb, bool accumulate, T* c, int64_t ldc) {
  constexpr int64_t NC = kNV<T> * Vectorized<T>::size();
  for (int64_t j0 = 0; j0 < n; j0 += NC) {
    const int64_t nc = std::min(NC, n - j0);
    const T* bj = b + j0;
    T* cj = c + j0;
    if (nc == NC) {
      gemm_nn_cols<T, kNV<T>, true>(m, k, alpha, a, a_rs, a_ps, bj, ldb, accumulate, cj, ldc, nc);
    } else {
      const int64_t nv = (nc + Vectorized<T>::size() - 1) / Vectorized<T>::size();
      with_count<kMinPartialNV<T>, kNV<T>>(nv, [&]<int NV>() {
        gemm_nn_cols<T, NV, false>(m, k, alpha, a, a_rs, a_ps, bj, ldb, accumulate, cj, ldc, nc);
      });
    }
  }
}

template <typename T>
inline T dot(const T* x, const T* y, int64_t k) {
  using V = Vectorized<T>;
  constexpr int VS = V::size();
  V s0(T(0)), s1(T(0));
  int64_t p = 0;
  for (; p + 2 * VS <= k; p += 2 * VS) {
    s0 = at::vec::fmadd(V::loadu(x + p), V::loadu(y + p), s0);
    s1 = at::vec::fmadd(V::loadu(x + p + VS), V::loadu(y + p + VS), s1);
  }
  if (p + VS <= k) {
    s0 = at::vec::fmadd(V::loadu(x + p), V::loadu(y + p), s0);
    p += VS;
  }
  if (p < k) s1 = at::vec::fmadd(V::loadu(x + p, k - p), V::loadu(y + p, k - p), s1);
  return at::vec::vec_reduce_all<T>([](V& u, V& w) { return u + w; }, s0 + s1);
}

#if defined(CPU_CAPABILITY_AVX512)
// x[k] <- column k of the 16 x 16 matrix of 32-bit words whose rows are x[0..15]:
// 4 x 4 transposes inside each 128-bit lane (unpack 32, 64), then of the lanes.
inline void transpose16x16(__m512i x[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(x[i], x[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(x[i], x[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // u[g + c], lane L: column 4L + c of rows g..g+3
    u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
    u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
    u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
    u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // column 4L + c = lane L of u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    x[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    x[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    x[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    x[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// T[e * ldt + r] = W[r * ldw + e] for r < rows, e < kw: 32-bit elements (fp32, or
// bf16 pairs), 16 x 16 blocks in registers.
inline void transpose32(const uint32_t* w, int64_t rows, int64_t kw, int64_t ldw, uint32_t* t, int64_t ldt) {
  for (int64_t r0 = 0; r0 < rows; r0 += 16)
    for (int64_t e0 = 0; e0 < kw; e0 += 16) {
      const int64_t nr = std::min<int64_t>(16, rows - r0), ne = std::min<int64_t>(16, kw - e0);
      __m512i x[16];
      for (int i = 0; i < 16; ++i)
        x[i] = i < nr ? _mm512_maskz_loadu_epi32(mask16(ne), w + (r0 + i) * ldw + e0) : _mm512_setzero_si512();
      transpose16x16(x);
      for (int k = 0; k < ne; ++k) _mm512_mask_storeu_epi32(t + (e0 + k) * ldt + r0, mask16(nr), x[k]);
    }
}
#endif

// Bt[p * ldbt + j] = B[j * ldb + p] for j < n, p < k (16 x 16 tiles; fp32 on
// AVX512: transpose32).
template <typename Src, typename T>
inline void pack_transposed(int64_t n, int64_t k, const Src* b, int64_t ldb, T* bt, int64_t ldbt) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<Src, float> && std::is_same_v<T, float>) {
    transpose32(reinterpret_cast<const uint32_t*>(b), n, k, ldb, reinterpret_cast<uint32_t*>(bt), ldbt);
    return;
  }
#endif
  constexpr int64_t kT = 16;
  for (int64_t j0 = 0; j0 < n; j0 += kT)
    for (int64_t p0 = 0; p0 < k; p0 += kT) {
      const int64_t j1 = std::min(n, j0 + kT), p1 = std::min(k, p0 + kT);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t p = p0; p < p1; ++p) bt[p * ldbt + j] = static_cast<T>(b[j * ldb + p]);
    }
}

// C[i, j] = alpha * sum_p A[i, p] B[j, p] with B given transposed (bt, packed
// by pack_transposed); when m < 4, from B's rows directly (dot products).
template <typename T>
inline void gemm_nt(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                    int64_t ldb, const T* bt, int64_t ldbt, T* c, int64_t ldc) {
  if (m < 4) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = alpha * dot(a + i * lda, b + j * ldb, k);
    return;
  }
  gemm_nn<T>(m, n, k, alpha, a, lda, 1, bt, ldbt, false, c, ldc);
}

}  // namespace maven_fast::MAVEN_FAST_CPU_NS::micro
