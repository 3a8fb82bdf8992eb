// CPU kernels of the skinny GEMMs (skinny_gemm.h), compiled once per CPU
// capability. All problems of a call run in ONE at::parallel_for over work
// units: blocks of weight rows (kNT), of output columns (kNN) or of output rows
// (kTN), so each thread streams its share of the large operand once.
//
//   kNT: C^T [n, m] = W [n, k] A^T [k, m]: A packed transposed once (fp32, m
//        padded to whole vectors); a register tile of R weight rows x NV
//        vectors of A^T columns, each weight element broadcast once per tile;
//        the tile is written transposed into C with alpha, bias, accumulate.
//   kNN: C [m, n-block] = A [m, k] W [k, n-block]   (micro::gemm_nn)
//   kTN: C [m-block, n] = G^T [m-block, k] X [k, n]   (micro::gemm_nn, k small)
// Reduced-precision inputs are widened to fp32 once per call (the small
// operands) or per unit (the unit's block of the large one); C is written in
// its dtype from fp32.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/micro_gemm.h"
#include "common/skinny_gemm.h"

namespace maven_fast {
namespace MAVEN_FAST_CPU_NS {
namespace {

using at::vec::Vectorized;
using Vf = Vectorized<float>;
constexpr int64_t VS = Vf::size();
constexpr int64_t kNTRows = 64;   // weight rows per kNT unit
constexpr int64_t kNNCols = 64;   // output columns per kNN unit

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// out[r * ldo + c] = sum_p w[r * ldw + p] * at[p * ldat + c], r < R, c < NV * VS.
template <int R, int NV>
inline void nt_tile(int64_t k, const float* w, int64_t ldw, const float* at, int64_t ldat,
                    float* out, int64_t ldo) {
  Vf acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Vf(0.f);
  for (int64_t p = 0; p < k; ++p) {
    Vf b[NV];
    for (int v = 0; v < NV; ++v) b[v] = Vf::loadu(at + p * ldat + v * VS);
    for (int r = 0; r < R; ++r) {
      const Vf a(w[r * ldw + p]);
      for (int v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(a, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v].store(out + r * ldo + v * VS);
}

// Register tiles: R rows x NV vectors, within the register file (16 vector
// registers below AVX512, 32 with it).
constexpr int kR2 = VS >= 16 ? 12 : 6;  // NV = 2
constexpr int kR1 = VS >= 16 ? 16 : 8;  // NV = 1

constexpr int64_t kTNRows = 4 * kR2;  // output rows per kTN unit

// out [rows, mp] = w [rows, k] at [k, mp]  (mp a multiple of VS)
inline void nt_block(int64_t rows, int64_t mp, int64_t k, const float* w, int64_t ldw,
                     const float* at, float* out) {
  for (int64_t c0 = 0; c0 < mp;) {
    if (mp - c0 >= 2 * VS) {
      int64_t r = 0;
      for (; r + kR2 <= rows; r += kR2)
        nt_tile<kR2, 2>(k, w + r * ldw, ldw, at + c0, mp, out + r * mp + c0, mp);
      for (; r < rows; ++r) nt_tile<1, 2>(k, w + r * ldw, ldw, at + c0, mp, out + r * mp + c0, mp);
      c0 += 2 * VS;
    } else {
      int64_t r = 0;
      for (; r + kR1 <= rows; r += kR1)
        nt_tile<kR1, 1>(k, w + r * ldw, ldw, at + c0, mp, out + r * mp + c0, mp);
      for (; r < rows; ++r) nt_tile<1, 1>(k, w + r * ldw, ldw, at + c0, mp, out + r * mp + c0, mp);
      c0 += VS;
    }
  }
}

// C[i, j] (+)= alpha * sum_p A(i, p) B[p, j] for a tile of MR rows x NV
// vectors of columns (cols <= NV * VS valid), A(i, p) = a[i * a_rs + p * a_ps].
template <int MR, int NV, bool Full>
inline void nn_tile(int64_t k, float alpha, const float* a, int64_t a_rs, int64_t a_ps,
                    const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc,
                    int64_t cols) {
  Vf acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = Vf(0.f);
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    Vf bv[NV];
    for (int v = 0; v < NV; ++v) {
      if constexpr (Full) {
        bv[v] = Vf::loadu(bp + v * VS);
      } else {
        const int64_t cnt = std::clamp<int64_t>(cols - v * VS, 0, VS);
        bv[v] = cnt > 0 ? Vf::loadu(bp + v * VS, cnt) : Vf(0.f);
      }
    }
    const float* ap = a + p * a_ps;
    for (int i = 0; i < MR; ++i) {
      const Vf av(ap[i * a_rs]);
      for (int v = 0; v < NV; ++v) acc[i][v] = at::vec::fmadd(av, bv[v], acc[i][v]);
    }
  }
  const Vf va(alpha);
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    for (int v = 0; v < NV; ++v) {
      const int64_t cnt = Full ? VS : std::clamp<int64_t>(cols - v * VS, 0, VS);
      if (cnt <= 0) break;
      Vf out = acc[i][v] * va;
      if (accumulate) out = out + (Full ? Vf::loadu(ci + v * VS) : Vf::loadu(ci + v * VS, cnt));
      if constexpr (Full) {
        out.store(ci + v * VS);
      } else {
        out.store(ci + v * VS, cnt);
      }
    }
  }
}

// C [m, n] (+)= alpha * A [m, k] B [k, n]; column blocks of 2 vectors, row
// blocks of kR2 (the register tile of nt_tile), the rows left over one tile.
template <bool Full>
inline void nn_colblock(int64_t m, int64_t k, float alpha, const float* a, int64_t a_rs,
                        int64_t a_ps, const float* b, int64_t ldb, bool accumulate, float* c,
                        int64_t ldc, int64_t cols) {
  micro::for_row_tiles<kR2>(m, [&]<int R>(int64_t i) {
    nn_tile<R, 2, Full>(k, alpha, a + i * a_rs, a_rs, a_ps, b, ldb, accumulate, c + i * ldc, ldc, cols);
  });
}

inline void gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t a_rs,
                    int64_t a_ps, const float* b, int64_t ldb, bool accumulate, float* c,
                    int64_t ldc) {
  constexpr int64_t NC = 2 * VS;
  for (int64_t j0 = 0; j0 < n; j0 += NC) {
    const int64_t cols = std::min(NC, n - j0);
    if (cols == NC) {
      nn_colblock<true>(m, k, alpha, a, a_rs, a_ps, b + j0, ldb, accumulate, c + j0, ldc, cols);
    } else {
      nn_colblock<false>(m, k, alpha, a, a_rs, a_ps, b + j0, ldb, accumulate, c + j0, ldc, cols);
    }
  }
}

template <typename T>
inline float to_f(T x) {
  return static_cast<float>(x);
}

// dst[r * ldd + c] = (float) src[r * lds + c]
template <typename T>
void widen(const T* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r) at::vec::convert(src + r * lds, dst + r * ldd, cols);
}

// C rows [rows, cols] (ldc) = (accumulate ? C : 0) + src (fp32, lds)
template <typename T>
void store_rows(const float* src, int64_t lds, int64_t rows, int64_t cols, bool accumulate, T* c,
                int64_t ldc) {
  for (int64_t r = 0; r < rows; ++r) {
    T* cr = c + r * ldc;
    const float* s = src + r * lds;
    if (accumulate) {
      for (int64_t j = 0; j < cols; ++j) cr[j] = static_cast<T>(to_f(cr[j]) + s[j]);
    } else {
      at::vec::convert(s, cr, cols);
    }
  }
}

struct Prepared {
  std::vector<float> a;  // kNT: A^T packed [k, mp]; others: A widened (non-float)
  std::vector<float> b;  // kTN: B widened (non-float)
  int64_t mp = 0;
  int64_t units = 0;
};

template <typename T>
Prepared prepare(const SkinnyGemm& P) {
  Prepared r;
  const T* a = static_cast<const T*>(P.a);
  const T* b = static_cast<const T*>(P.b);
  switch (P.kind) {
    case SkinnyKind::kNT: {
      r.mp = round_up(P.m, VS);
      r.a.assign(P.k * r.mp, 0.f);
      for (int64_t i = 0; i < P.m; ++i)
        for (int64_t p = 0; p < P.k; ++p) r.a[p * r.mp + i] = to_f(a[i * P.lda + p]);
      r.units = (P.n + kNTRows - 1) / kNTRows;
      break;
    }
    case SkinnyKind::kNN:
      if constexpr (!std::is_same_v<T, float>) {
        r.a.resize(P.m * P.k);
        widen(a, P.lda, P.m, P.k, r.a.data(), P.k);
      }
      r.units = (P.n + kNNCols - 1) / kNNCols;
      break;
    case SkinnyKind::kTN:
      if constexpr (!std::is_same_v<T, float>) {
        r.a.resize(P.k * P.m);
        widen(a, P.lda, P.k, P.m, r.a.data(), P.m);
        r.b.resize(P.k * P.n);
        widen(b, P.ldb, P.k, P.n, r.b.data(), P.n);
      }
      r.units = (P.m + kTNRows - 1) / kTNRows;
      break;
  }
  return r;
}

template <typename T>
void run_unit(const SkinnyGemm& P, const Prepared& pr, int64_t u, std::vector<float>& s1,
              std::vector<float>& s2) {
  constexpr bool kFloat = std::is_same_v<T, float>;
  const T* a = static_cast<const T*>(P.a);
  const T* b = static_cast<const T*>(P.b);
  T* c = static_cast<T*>(P.c);
  const T* bias = static_cast<const T*>(P.bias);
  switch (P.kind) {
    case SkinnyKind::kNT: {
      const int64_t n0 = u * kNTRows, rows = std::min(kNTRows, P.n - n0);
      const float* w;
      int64_t ldw;
      if constexpr (kFloat) {
        w = b + n0 * P.ldb;
        ldw = P.ldb;
      } else {
        s1.resize(rows * P.k);
        widen(b + n0 * P.ldb, P.ldb, rows, P.k, s1.data(), P.k);
        w = s1.data();
        ldw = P.k;
      }
      s2.resize(rows * pr.mp);
      nt_block(rows, pr.mp, P.k, w, ldw, pr.a.data(), s2.data());
      // C[i, n0 + j] = alpha * out[j, i] + bias[n0 + j] (+ C)
      float bj[kNTRows];
      for (int64_t j = 0; j < rows; ++j) bj[j] = bias ? to_f(bias[n0 + j]) : 0.f;
      for (int64_t i = 0; i < P.m; ++i) {
        T* ci = c + i * P.ldc + n0;
        const float* col = s2.data() + i;
        for (int64_t j = 0; j < rows; ++j) {
          float v = P.alpha * col[j * pr.mp] + bj[j];
          if (P.accumulate) v += to_f(ci[j]);
          ci[j] = static_cast<T>(v);
        }
      }
      break;
    }
    case SkinnyKind::kNN: {
      const int64_t j0 = u * kNNCols, cols = std::min(kNNCols, P.n - j0);
      if constexpr (kFloat) {
        gemm_nn(P.m, cols, P.k, P.alpha, a, P.lda, 1, b + j0, P.ldb, P.accumulate,
                              c + j0, P.ldc);
      } else {
        s1.resize(P.k * cols);
        widen(b + j0, P.ldb, P.k, cols, s1.data(), cols);
        s2.resize(P.m * cols);
        gemm_nn(P.m, cols, P.k, P.alpha, pr.a.data(), P.k, 1, s1.data(), cols, false,
                              s2.data(), cols);
        store_rows(s2.data(), cols, P.m, cols, P.accumulate, c + j0, P.ldc);
      }
      break;
    }
    case SkinnyKind::kTN: {
      const int64_t i0 = u * kTNRows, rows = std::min(kTNRows, P.m - i0);
      if constexpr (kFloat) {
        gemm_nn(rows, P.n, P.k, P.alpha, a + i0, 1, P.lda, b, P.ldb, P.accumulate,
                              c + i0 * P.ldc, P.ldc);
      } else {
        s2.resize(rows * P.n);
        gemm_nn(rows, P.n, P.k, P.alpha, pr.a.data() + i0, 1, P.m, pr.b.data(), P.n,
                              false, s2.data(), P.n);
        store_rows(s2.data(), P.n, rows, P.n, P.accumulate, c + i0 * P.ldc, P.ldc);
      }
      break;
    }
  }
}

template <typename T>
void run_all(const std::vector<SkinnyGemm>& problems) {
  std::vector<Prepared> prep;
  prep.reserve(problems.size());
  std::vector<std::pair<int64_t, int64_t>> units;  // (problem, unit)
  for (size_t i = 0; i < problems.size(); ++i) {
    prep.push_back(prepare<T>(problems[i]));
    for (int64_t u = 0; u < prep.back().units; ++u) units.emplace_back(static_cast<int64_t>(i), u);
  }
  at::parallel_for(0, static_cast<int64_t>(units.size()), 1, [&](int64_t u0, int64_t u1) {
    thread_local std::vector<float> s1, s2;
    for (int64_t u = u0; u < u1; ++u) {
      const auto [i, unit] = units[u];
      run_unit<T>(problems[i], prep[i], unit, s1, s2);
    }
  });
}

}  // namespace

void skinny_gemm_cpu_kernel(at::ScalarType dtype, const std::vector<SkinnyGemm>& problems) {
  switch (dtype) {
    case at::kFloat:
      run_all<float>(problems);
      break;
    case at::kBFloat16:
      run_all<at::BFloat16>(problems);
      break;
    case at::kHalf:
      run_all<at::Half>(problems);
      break;
    default:
      TORCH_CHECK(false, "skinny_gemm: unsupported dtype ", dtype);
  }
}

}  // namespace MAVEN_FAST_CPU_NS
}  // namespace maven_fast
