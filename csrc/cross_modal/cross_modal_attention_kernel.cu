// CUDA attention of the cross-modal block: every general and absorbed pathway
// of a call in ONE forward launch, and two backward launches (dQ, then dK/dV).
// Same semantics as cross_modal_attention_cpu_kernel.cpp (which defines them):
//
// Forward, per problem (pathway), batch item b, head h, query row i, keys j < len[b]:
//   s_ij = scale * <q_i, k_j>
//   m_i  = max_j s_ij,   l_i = sum_j exp(s_ij - m_i)          (online over key tiles, fp32)
//   p_ij = exp(s_ij - m_i) / l_i,   p~_ij = p_ij z_ij / (1 - p_drop)   (z: Philox keep mask)
//   o_i  = sum_j p~_ij v_j,   lse_i = m_i + log l_i,   psum_i = sum_j p~_ij (when asked)
//   len[b] = 0: o_i = 0, lse_i = +inf, psum_i = 0
// Backward (FlashAttention-2 form, P recomputed from lse, mask regenerated):
//   D_i   = <do_i, o_i> + dpsum_i psum_i
//   dp_ij = (<do_i, v_j> + dpsum_i) z_ij / (1 - p_drop),   ds_ij = p_ij (dp_ij - D_i)
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p~_ij do_i
//   shared K = V (k.sh == 0, weight absorption): dk_out[b, j] += sum_{problems, h} (dk_j + dv_j)
//
// Layout (all three kernels): 128 threads as 16 (ty) x 8 (tx). A CTA owns 32
// rows (queries; keys in the dK/dV kernel), thread rows ty and ty + 16, and one
// chunk of DCH output columns (thread columns tx + 8 k), so any head size runs:
// dk and dv larger than DCH are split over CTAs (which recompute the scores).
// Score tiles are 32 queries x 32 keys, thread (ty, tx) holding queries
// ty, ty + 16 and the 4 consecutive keys 4 tx .. 4 tx + 3 (ONE Philox call per
// row gives their 4 keep words: the CPU's counters exactly). Products over
// the feature dimension run through shared memory in chunks of 32 (padded
// rows, no bank conflicts), inputs widened to fp32 on load; all arithmetic is
// fp32. Rows/keys/columns out of range are zero-filled in shared memory and
// keys >= len are never read, so every global index is bounded by the
// problem's sizes (len is clamped to [0, tk] in the kernel).
//
// Grids: forward and dQ: one CTA per (problem, b, h, 32-query block, column
// chunk), problems found from prefix CTA counts (the problem table, at most 6,
// is a __grid_constant__ kernel argument). dK/dV: one CTA per (problem, b, h,
// 32-key block, chunk) for pathways with their own K and V; pathways with
// K = V shared by the heads and the same dk_out buffer are one unit whose CTA
// (unit, b, key block, chunk) loops over those problems and all heads and
// then adds ONCE to dk_out (read-modify-write by the one owner of those
// elements): race-free and deterministic without atomics; the buffer's
// previous contents (other gradient terms) are kept. dQ and D_i are computed
// by the dQ kernel (D_i stored in an fp32 workspace); the dK/dV kernel reads
// them, so the backward is deterministic (no atomics anywhere).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "cross_modal/cross_modal_cuda.h"
#include "cross_modal/cross_modal_cuda_common.cuh"

namespace maven_fast::cuda {
namespace {

using cross_modal::AttentionProblem;
using cross_modal::DropoutParams;
using cross_modal::StridedSeq;
using cm::Dropout;
using cm::from_f;
using cm::to_f;

constexpr int kMaxP = kCrossModalMaxProblems;
constexpr int kThreads = 128;
constexpr int kTX = 8;               // threads along keys / output columns
constexpr int kTY = kThreads / kTX;  // 16 threads along rows
constexpr int kR = 2;                // rows per thread
constexpr int kBR = kR * kTY;        // 32 rows per CTA
constexpr int kKU = 4;               // consecutive keys per thread in a score tile
constexpr int kBC = kKU * kTX;       // 32 keys per score tile
constexpr int kDC = 32;              // feature chunk of the score products
constexpr int kLd = kDC + 1;         // padded row of a score-product chunk
constexpr int kLdP = kBC + 1;        // padded row of a probability tile
#ifndef MF_FWD_MIN
#define MF_FWD_MIN 3
#define MF_DQ_MIN 2
#define MF_DKDV_MIN 2
#endif
constexpr int kFwdMinBlocks = MF_FWD_MIN;
constexpr int kDqMinBlocks = MF_DQ_MIN;
constexpr int kDkdvMinBlocks = MF_DKDV_MIN;
static_assert(kBR == kBC, "the dK/dV kernel uses key blocks of kBR rows as score-tile keys");
static_assert(kTX * kTY == kThreads && kTX <= 32 && (32 % kTX) == 0, "lane groups within a warp");

struct Problem {
  StridedSeq q, k, v, o, dout, dq, dk_out, dv_out;
  const int64_t* key_len;
  float* lse;
  float* psum;
  const float* dpsum;
  int64_t first_cta;  // first CTA of this problem in the forward / dQ grid
  int64_t d_offset;   // its D rows in the backward workspace: [B, H, tq]
  int heads, tq, tk, dk, dv;
  int n_qb, n_ch;     // query blocks, column chunks (forward: of dv, dQ: of dk)
  uint32_t pathway;
  float scale;
};

// dK/dV work unit: one problem with its own K/V, or all problems whose K = V
// is shared by the heads and which add into the same dk_out.
struct KvUnit {
  int64_t first_cta;
  int member0, n_members;  // problem indices member[member0 .. member0 + n_members)
  int shared;
  int n_kb, n_ch;          // key blocks (over tk), column chunks (of max(dk, dv))
};

struct Params {
  Problem p[kMaxP];
  KvUnit unit[kMaxP];
  int member[kMaxP];
  int n_problems, n_units;
  int64_t batch;
  Dropout drop;
  float* dws;  // backward: D rows
};
static_assert(sizeof(Params) <= 4000, "kernel argument space (4 KB)");

template <typename T>
__device__ __forceinline__ const T* row_ptr(const StridedSeq& s, int64_t b, int64_t t, int64_t h) {
  return static_cast<const T*>(s.ptr) + b * s.sb + t * s.st + h * s.sh;
}
template <typename T>
__device__ __forceinline__ T* row_ptr_mut(const StridedSeq& s, int64_t b, int64_t t, int64_t h) {
  return static_cast<T*>(s.ptr) + b * s.sb + t * s.st + h * s.sh;
}

// acc[r][u] += sum_{c < d} A[ty + 16 r][c] * B[4 tx + u][c] for the calling
// thread (ty, tx); A has a_rows valid rows (row stride lda), B b_rows (ldb);
// invalid rows read as 0. sa, sb: kBR * kLd floats each. Starts and ends with
// all threads past a __syncthreads (d >= 1), so callers may reuse sa/sb after.
template <typename T>
__device__ __forceinline__ void score_tile(const T* __restrict__ a, int64_t lda, int a_rows,
                                           const T* __restrict__ b, int64_t ldb, int b_rows, int d,
                                           float* __restrict__ sa, float* __restrict__ sb,
                                           float (&acc)[kR][kKU]) {
  const int tid = threadIdx.x, ty = tid / kTX, tx = tid % kTX;
  // Loads: thread tid fills column lc of rows lr, lr + 4, ... (a warp reads 32
  // consecutive elements of one row).
  constexpr int kRowsPerPass = kThreads / kDC;
  const int lc = tid % kDC, lr = tid / kDC;
  for (int c0 = 0; c0 < d; c0 += kDC) {
    const bool in_c = c0 + lc < d;
#pragma unroll 4
    for (int r = lr; r < kBR; r += kRowsPerPass) {
      sa[r * kLd + lc] = (in_c && r < a_rows) ? to_f(a[r * lda + c0 + lc]) : 0.f;
      sb[r * kLd + lc] = (in_c && r < b_rows) ? to_f(b[r * ldb + c0 + lc]) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < kDC; ++c) {
      float av[kR], bv[kKU];
#pragma unroll
      for (int r = 0; r < kR; ++r) av[r] = sa[(ty + kTY * r) * kLd + c];
#pragma unroll
      for (int u = 0; u < kKU; ++u) bv[u] = sb[(kKU * tx + u) * kLd + c];
#pragma unroll
      for (int r = 0; r < kR; ++r)
#pragma unroll
        for (int u = 0; u < kKU; ++u) acc[r][u] = fmaf(av[r], bv[u], acc[r][u]);
    }
    __syncthreads();
  }
}

// Loads rows [0, n_rows) x columns [c0, c0 + DCH) of a strided row block into
// dst[32][DCH] as fp32 (columns >= d and rows >= n_rows read as 0).
template <typename T, int DCH>
__device__ __forceinline__ void load_cols(const T* __restrict__ src, int64_t ld, int n_rows,
                                          int c0, int d, float* __restrict__ dst) {
  for (int e = threadIdx.x; e < kBR * DCH; e += kThreads) {
    const int r = e / DCH, c = e % DCH;
    dst[e] = (r < n_rows && c0 + c < d) ? to_f(src[r * ld + c0 + c]) : 0.f;
  }
}

// acc[r][k] += sum_j tile[row ty + 16 r][j] cols[j][tx + 8 k] over the 32 columns
// of a probability tile (P V in the forward, dS K in dQ); tile: [32][kLdP],
// cols: [32][DCH], both in shared memory.
template <int DCH>
__device__ __forceinline__ void tile_times_cols(const float* __restrict__ tile,
                                                const float* __restrict__ cols,
                                                float (&acc)[kR][DCH / kTX]) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll 4
  for (int j = 0; j < kBC; ++j) {
    float t[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) t[r] = tile[(ty + kTY * r) * kLdP + j];
#pragma unroll
    for (int k = 0; k < DCH / kTX; ++k) {
      const float c = cols[j * DCH + tx + kTX * k];
#pragma unroll
      for (int r = 0; r < kR; ++r) acc[r][k] = fmaf(t[r], c, acc[r][k]);
    }
  }
}

__device__ __forceinline__ int find_problem(const Params& P, int64_t cta) {
  int pi = 0;
  while (pi + 1 < P.n_problems && cta >= P.p[pi + 1].first_cta) ++pi;
  return pi;
}

// ---------------------------------------------------------------- forward
template <typename T, int DCH>
__global__ void __launch_bounds__(kThreads, kFwdMinBlocks)
    cross_modal_attention_forward_kernel(const __grid_constant__ Params P) {
  constexpr int NC = DCH / kTX;
  __shared__ float sa[kBR * kLd], sb[kBC * kLd], sp[kBR * kLdP], sv[kBC * DCH];
  const int tid = threadIdx.x, ty = tid / kTX, tx = tid % kTX;
  const int64_t cta = blockIdx.x;
  const Problem& pr = P.p[find_problem(P, cta)];
  int64_t rem = cta - pr.first_cta;
  const int ch = static_cast<int>(rem % pr.n_ch);
  rem /= pr.n_ch;
  const int qb = static_cast<int>(rem % pr.n_qb);
  rem /= pr.n_qb;
  const int h = static_cast<int>(rem % pr.heads);
  const int64_t b = rem / pr.heads;
  if (b >= P.batch) return;  // not reached: the grid is the sum of the problems' CTAs

  const int tq = pr.tq, dk = pr.dk, dv = pr.dv;
  const int len = cm::checked_len(pr.key_len[b], pr.tk,
                                  cross_modal::key_modality(static_cast<int>(pr.pathway)), b);
  const Dropout drop = cm::resolved(P.drop);
  const int i0 = qb * kBR, c0 = ch * DCH;
  const int q_rows = min(kBR, tq - i0);
  const float scale = pr.scale;
  const uint32_t stream = cross_modal::attention_stream(static_cast<int>(pr.pathway), h);
  const T* qp = row_ptr<T>(pr.q, b, i0, h);
  const T* kp = row_ptr<T>(pr.k, b, 0, h);
  const T* vp = row_ptr<T>(pr.v, b, 0, h);

  float m[kR], l[kR], ps[kR], o[kR][NC];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
    ps[r] = 0.f;
#pragma unroll
    for (int k = 0; k < NC; ++k) o[r][k] = 0.f;
  }

  for (int j0 = 0; j0 < len; j0 += kBC) {  // every tile has a valid key j0 (CTA-uniform bounds)
    const int k_rows = min(kBC, len - j0);
    float s[kR][kKU];
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int u = 0; u < kKU; ++u) s[r][u] = 0.f;
    score_tile<T>(qp, pr.q.st, q_rows, kp + j0 * pr.k.st, pr.k.st, k_rows, dk, sa, sb, s);
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int i = i0 + ty + kTY * r;
      float mx = -INFINITY;
#pragma unroll
      for (int u = 0; u < kKU; ++u) {
        const int j = j0 + kKU * tx + u;
        s[r][u] = j < len ? s[r][u] * scale : -INFINITY;
        mx = fmaxf(mx, s[r][u]);
      }
      mx = cm::group_max<kTX>(mx);
      const float m_new = fmaxf(m[r], mx);  // finite: key j0 is valid
      const float alpha = expf(m[r] - m_new);  // 0 on the first tile (m = -inf)
      float z[kKU] = {1.f, 1.f, 1.f, 1.f};
      if (drop.on) cm::keep4(drop, stream, b, i, j0 + kKU * tx, z);
      float lsum = 0.f, psum = 0.f;
#pragma unroll
      for (int u = 0; u < kKU; ++u) {
        const int j = j0 + kKU * tx + u;
        const float p = j < len ? expf(s[r][u] - m_new) : 0.f;
        const float pt = p * z[u];
        lsum += p;
        psum += pt;
        sp[(ty + kTY * r) * kLdP + kKU * tx + u] = pt;
      }
      lsum = cm::group_sum<kTX>(lsum);
      psum = cm::group_sum<kTX>(psum);
      l[r] = l[r] * alpha + lsum;
      ps[r] = ps[r] * alpha + psum;
      m[r] = m_new;
#pragma unroll
      for (int k = 0; k < NC; ++k) o[r][k] *= alpha;
    }
    load_cols<T, DCH>(vp + j0 * pr.v.st, pr.v.st, k_rows, c0, dv, sv);
    __syncthreads();
    tile_times_cols<DCH>(sp, sv, o);
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int i = i0 + ty + kTY * r;
    if (i >= tq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    T* orow = row_ptr_mut<T>(pr.o, b, i, h) + c0;
#pragma unroll
    for (int k = 0; k < NC; ++k) {
      const int c = tx + kTX * k;
      if (c0 + c < dv) orow[c] = from_f<T>(o[r][k] * inv);
    }
    if (ch == 0 && tx == 0) {
      const int64_t idx = (b * pr.heads + h) * static_cast<int64_t>(tq) + i;
      pr.lse[idx] = l[r] > 0.f ? m[r] + logf(l[r]) : INFINITY;
      if (pr.psum) pr.psum[idx] = l[r] > 0.f ? ps[r] * inv : 0.f;
    }
  }
}

// ---------------------------------------------------------------- backward: shared part
// The recomputed probabilities of one score tile: pt = p~ (for dV), ds (for dQ, dK).
struct RowState {
  float lse, D, extra;
};

__device__ __forceinline__ void tile_grads(const Dropout& drop, uint32_t stream, int64_t b, int i0,
                                           int j0, int tq, int len, float scale,
                                           const float (&s)[kR][kKU], const float (&dp)[kR][kKU],
                                           const RowState (&rs)[kR], float* __restrict__ sp,
                                           float* __restrict__ sds) {
  const int tid = threadIdx.x, ty = tid / kTX, tx = tid % kTX;
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int i = i0 + ty + kTY * r;
    float z[kKU] = {1.f, 1.f, 1.f, 1.f};
    if (drop.on) cm::keep4(drop, stream, b, i, j0 + kKU * tx, z);
#pragma unroll
    for (int u = 0; u < kKU; ++u) {
      const int j = j0 + kKU * tx + u;
      const bool valid = i < tq && j < len;
      const float p = valid ? expf(s[r][u] * scale - rs[r].lse) : 0.f;
      float ds;
      if (drop.on) {
        ds = scale * p * ((dp[r][u] + rs[r].extra) * z[u] - rs[r].D);
      } else {
        ds = scale * p * (dp[r][u] + rs[r].extra - rs[r].D);
      }
      if (sp) sp[(ty + kTY * r) * kLdP + kKU * tx + u] = p * z[u];
      sds[(ty + kTY * r) * kLdP + kKU * tx + u] = ds;
    }
  }
}

// ---------------------------------------------------------------- backward: dQ (and D)
template <typename T, int DCH>
__global__ void __launch_bounds__(kThreads, kDqMinBlocks)
    cross_modal_attention_backward_dq_kernel(const __grid_constant__ Params P) {
  constexpr int NC = DCH / kTX;
  __shared__ float sa[kBR * kLd], sb[kBC * kLd], sds[kBR * kLdP], skc[kBC * DCH];
  const int tid = threadIdx.x, ty = tid / kTX, tx = tid % kTX;
  const int64_t cta = blockIdx.x;
  const Problem& pr = P.p[find_problem(P, cta)];
  int64_t rem = cta - pr.first_cta;
  const int ch = static_cast<int>(rem % pr.n_ch);
  rem /= pr.n_ch;
  const int qb = static_cast<int>(rem % pr.n_qb);
  rem /= pr.n_qb;
  const int h = static_cast<int>(rem % pr.heads);
  const int64_t b = rem / pr.heads;
  if (b >= P.batch) return;

  const int tq = pr.tq, dk = pr.dk, dv = pr.dv;
  const int len = cm::clamp_len(pr.key_len[b], pr.tk);
  const Dropout drop = cm::resolved(P.drop);
  const int i0 = qb * kBR, c0 = ch * DCH;
  const int q_rows = min(kBR, tq - i0);
  const float scale = pr.scale;
  const uint32_t stream = cross_modal::attention_stream(static_cast<int>(pr.pathway), h);
  const T* qp = row_ptr<T>(pr.q, b, i0, h);
  const T* dop = row_ptr<T>(pr.dout, b, i0, h);
  const T* kp = row_ptr<T>(pr.k, b, 0, h);
  const T* vp = row_ptr<T>(pr.v, b, 0, h);

  // D_i = <do_i, o_i> + dpsum_i psum_i, over all of dv (8 lanes per row).
  RowState rs[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int i = i0 + ty + kTY * r;
    float acc = 0.f;
    if (i < tq) {
      const T* dorow = dop + (ty + kTY * r) * pr.dout.st;
      const T* orow = row_ptr<T>(pr.o, b, i, h);
      for (int c = tx; c < dv; c += kTX) acc = fmaf(to_f(dorow[c]), to_f(orow[c]), acc);
    }
    acc = cm::group_sum<kTX>(acc);
    rs[r].lse = 0.f;
    rs[r].extra = 0.f;
    if (i < tq) {
      const int64_t idx = (b * pr.heads + h) * static_cast<int64_t>(tq) + i;
      if (pr.dpsum) {
        rs[r].extra = pr.dpsum[idx];
        acc += rs[r].extra * pr.psum[idx];
      }
      rs[r].lse = pr.lse[idx];
      if (ch == 0 && tx == 0) P.dws[pr.d_offset + idx] = acc;
    }
    rs[r].D = acc;
  }

  float dq[kR][NC];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int k = 0; k < NC; ++k) dq[r][k] = 0.f;

  for (int j0 = 0; j0 < len; j0 += kBC) {
    const int k_rows = min(kBC, len - j0);
    float s[kR][kKU], dp[kR][kKU];
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int u = 0; u < kKU; ++u) s[r][u] = dp[r][u] = 0.f;
    score_tile<T>(qp, pr.q.st, q_rows, kp + j0 * pr.k.st, pr.k.st, k_rows, dk, sa, sb, s);
    score_tile<T>(dop, pr.dout.st, q_rows, vp + j0 * pr.v.st, pr.v.st, k_rows, dv, sa, sb, dp);
    tile_grads(drop, stream, b, i0, j0, tq, len, scale, s, dp, rs, nullptr, sds);
    load_cols<T, DCH>(kp + j0 * pr.k.st, pr.k.st, k_rows, c0, dk, skc);
    __syncthreads();
    tile_times_cols<DCH>(sds, skc, dq);
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int i = i0 + ty + kTY * r;
    if (i >= tq) continue;
    T* row = row_ptr_mut<T>(pr.dq, b, i, h) + c0;
#pragma unroll
    for (int k = 0; k < NC; ++k) {
      const int c = tx + kTX * k;
      if (c0 + c < dk) row[c] = from_f<T>(dq[r][k]);
    }
  }
}

// ---------------------------------------------------------------- backward: dK, dV
template <typename T, int DCH>
__global__ void __launch_bounds__(kThreads, kDkdvMinBlocks)
    cross_modal_attention_backward_dkdv_kernel(const __grid_constant__ Params P) {
  constexpr int NC = DCH / kTX;
  static_assert(DCH >= kLd, "the score-product chunks live in the column-chunk buffers");
  // Score-product chunks (sa, sb) and the dO / Q column chunks (sdo, sq) are
  // never live at the same time (score_tile ends with a barrier).
  __shared__ float sbuf[2 * kBR * DCH];
  __shared__ float sp[kBR * kLdP], sds[kBR * kLdP];
  float* sa = sbuf;
  float* sb = sbuf + kBR * kLd;
  float* sdo = sbuf;
  float* sq = sbuf + kBR * DCH;
  const int tid = threadIdx.x, ty = tid / kTX, tx = tid % kTX;
  const int64_t cta = blockIdx.x;
  int ui = 0;
  while (ui + 1 < P.n_units && cta >= P.unit[ui + 1].first_cta) ++ui;
  const KvUnit& U = P.unit[ui];
  int64_t rem = cta - U.first_cta;
  const int ch = static_cast<int>(rem % U.n_ch);
  rem /= U.n_ch;
  const int kb = static_cast<int>(rem % U.n_kb);
  rem /= U.n_kb;
  const Problem& p0 = P.p[P.member[U.member0]];
  int h_own = 0;
  if (!U.shared) {
    h_own = static_cast<int>(rem % p0.heads);
    rem /= p0.heads;
  }
  const int64_t b = rem;
  if (b >= P.batch) return;

  const int tk = p0.tk;  // members of a shared unit have the same keys (checked on the host)
  const int len = cm::clamp_len(p0.key_len[b], tk);
  const Dropout drop = cm::resolved(P.drop);
  const int j0 = kb * kBC, c0 = ch * DCH;
  float acc_k[kR][NC], acc_v[kR][NC];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int k = 0; k < NC; ++k) acc_k[r][k] = acc_v[r][k] = 0.f;

  if (j0 < len) {  // CTA-uniform
    const int k_rows = min(kBC, len - j0);
    for (int mi = 0; mi < U.n_members; ++mi) {
      const Problem& pr = P.p[P.member[U.member0 + mi]];
      const int tq = pr.tq, dk = pr.dk, dv = pr.dv;
      const float scale = pr.scale;
      const int h_lo = U.shared ? 0 : h_own, h_hi = U.shared ? pr.heads : h_own + 1;
      for (int h = h_lo; h < h_hi; ++h) {
        const uint32_t stream = cross_modal::attention_stream(static_cast<int>(pr.pathway), h);
        const T* kp = row_ptr<T>(pr.k, b, j0, h);
        const T* vp = row_ptr<T>(pr.v, b, j0, h);
        const int64_t row0 = (b * pr.heads + h) * static_cast<int64_t>(tq);
        for (int i0 = 0; i0 < tq; i0 += kBR) {
          const int q_rows = min(kBR, tq - i0);
          const T* qp = row_ptr<T>(pr.q, b, i0, h);
          const T* dop = row_ptr<T>(pr.dout, b, i0, h);
          float s[kR][kKU], dp[kR][kKU];
#pragma unroll
          for (int r = 0; r < kR; ++r)
#pragma unroll
            for (int u = 0; u < kKU; ++u) s[r][u] = dp[r][u] = 0.f;
          score_tile<T>(qp, pr.q.st, q_rows, kp, pr.k.st, k_rows, dk, sa, sb, s);
          score_tile<T>(dop, pr.dout.st, q_rows, vp, pr.v.st, k_rows, dv, sa, sb, dp);
          RowState rs[kR];
#pragma unroll
          for (int r = 0; r < kR; ++r) {
            const int i = i0 + ty + kTY * r;
            rs[r].lse = rs[r].D = rs[r].extra = 0.f;
            if (i < tq) {
              rs[r].lse = pr.lse[row0 + i];
              rs[r].D = P.dws[pr.d_offset + row0 + i];
              if (pr.dpsum) rs[r].extra = pr.dpsum[row0 + i];
            }
          }
          tile_grads(drop, stream, b, i0, j0, tq, len, scale, s, dp, rs, sp, sds);
          load_cols<T, DCH>(dop, pr.dout.st, q_rows, c0, dv, sdo);
          load_cols<T, DCH>(qp, pr.q.st, q_rows, c0, dk, sq);
          __syncthreads();
#pragma unroll 4
          for (int ii = 0; ii < kBR; ++ii) {
            float pv[kR], dsv[kR];
#pragma unroll
            for (int r = 0; r < kR; ++r) {
              pv[r] = sp[ii * kLdP + ty + kTY * r];
              dsv[r] = sds[ii * kLdP + ty + kTY * r];
            }
#pragma unroll
            for (int k = 0; k < NC; ++k) {
              const float dov = sdo[ii * DCH + tx + kTX * k];
              const float qv = sq[ii * DCH + tx + kTX * k];
#pragma unroll
              for (int r = 0; r < kR; ++r) {
                acc_v[r][k] = fmaf(pv[r], dov, acc_v[r][k]);
                acc_k[r][k] = fmaf(dsv[r], qv, acc_k[r][k]);
              }
            }
          }
          __syncthreads();
        }
      }
    }
  }

  if (U.shared) {  // dk_out[b, j] += sum of dK + dV (keys >= len get nothing)
    if (j0 >= len) return;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int j = j0 + ty + kTY * r;
      if (j >= len) continue;
      T* row = row_ptr_mut<T>(p0.dk_out, b, j, 0) + c0;
#pragma unroll
      for (int k = 0; k < NC; ++k) {
        const int c = tx + kTX * k;
        if (c0 + c < p0.dk) row[c] = from_f<T>(to_f(row[c]) + (acc_k[r][k] + acc_v[r][k]));
      }
    }
    return;
  }
  // Own K/V: every key row < tk is written (rows >= len get 0).
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int j = j0 + ty + kTY * r;
    if (j >= tk) continue;
    const bool in = j < len;
    T* krow = row_ptr_mut<T>(p0.dk_out, b, j, h_own) + c0;
    T* vrow = row_ptr_mut<T>(p0.dv_out, b, j, h_own) + c0;
#pragma unroll
    for (int k = 0; k < NC; ++k) {
      const int c = tx + kTX * k;
      if (c0 + c < p0.dk) krow[c] = from_f<T>(in ? acc_k[r][k] : 0.f);
      if (c0 + c < p0.dv) vrow[c] = from_f<T>(in ? acc_v[r][k] : 0.f);
    }
  }
}

// ---------------------------------------------------------------- host side
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

LaunchStatus invalid(const char* what) { return {cudaErrorInvalidValue, what}; }

// The column chunk: 64 when every head size fits (small heads), else 128.
int pick_chunk(const std::vector<AttentionProblem>& problems) {
  int64_t d = 1;
  for (const auto& p : problems) d = std::max({d, p.dk, p.dv});
  return d <= 64 ? 64 : 128;
}

LaunchStatus make_params(const std::vector<AttentionProblem>& problems, const DropoutParams& drop,
                         int dch, bool backward, float* dws, Params& P, int64_t& grid,
                         int64_t& grid_kv) {
  if (problems.empty() || problems.size() > static_cast<size_t>(kMaxP))
    return invalid("cross_modal attention: 1 to 6 problems per launch");
  P = Params{};
  P.n_problems = static_cast<int>(problems.size());
  P.batch = problems[0].batch;
  P.drop = cm::make_dropout(drop);
  P.dws = dws;
  grid = 0;
  int64_t d_rows = 0;
  for (int i = 0; i < P.n_problems; ++i) {
    const AttentionProblem& a = problems[i];
    if (a.batch != P.batch) return invalid("cross_modal attention: problems of one launch share the batch");
    const int64_t lim = INT_MAX / 2;
    if (a.heads < 1 || a.heads > lim || a.tq < 1 || a.tq > lim || a.tk < 1 || a.tk > lim ||
        a.dk < 1 || a.dk > lim || a.dv < 1 || a.dv > lim)
      return invalid("cross_modal attention: sizes must be in [1, 2^30)");
    if (!a.key_len || !a.lse) return invalid("cross_modal attention: key_len and lse are required");
    Problem& p = P.p[i];
    p.q = a.q;
    p.k = a.k;
    p.v = a.v;
    p.o = a.o;
    p.dout = a.dout;
    p.dq = a.dq;
    p.dk_out = a.dk_out;
    p.dv_out = a.dv_out;
    p.key_len = a.key_len;
    p.lse = static_cast<float*>(a.lse);
    p.psum = static_cast<float*>(a.psum);
    p.dpsum = static_cast<const float*>(a.dpsum);
    if (backward && p.dpsum && !p.psum) return invalid("cross_modal attention backward: dpsum needs psum");
    p.heads = static_cast<int>(a.heads);
    p.tq = static_cast<int>(a.tq);
    p.tk = static_cast<int>(a.tk);
    p.dk = static_cast<int>(a.dk);
    p.dv = static_cast<int>(a.dv);
    p.pathway = static_cast<uint32_t>(a.pathway);
    p.scale = static_cast<float>(a.scale);
    p.n_qb = static_cast<int>(ceil_div(a.tq, kBR));
    p.n_ch = static_cast<int>(ceil_div(backward ? a.dk : a.dv, dch));
    p.first_cta = grid;
    p.d_offset = d_rows;
    grid += a.batch * a.heads * p.n_qb * p.n_ch;
    d_rows += a.batch * a.heads * a.tq;
  }
  grid_kv = 0;
  if (backward) {
    int n_members = 0;
    std::vector<bool> done(problems.size(), false);
    for (int i = 0; i < P.n_problems; ++i) {
      if (done[i]) continue;
      const AttentionProblem& a = problems[i];
      KvUnit& u = P.unit[P.n_units++];
      u.first_cta = grid_kv;
      u.member0 = n_members;
      u.shared = a.k.sh == 0 ? 1 : 0;
      u.n_kb = static_cast<int>(ceil_div(a.tk, kBC));
      int64_t d = std::max(a.dk, a.dv);
      for (int j = i; j < P.n_problems; ++j) {
        const AttentionProblem& c = problems[j];
        if (done[j] || (j != i && !(u.shared && c.k.sh == 0 && c.dk_out.ptr == a.dk_out.ptr)))
          continue;
        if (u.shared && (c.tk != a.tk || c.key_len != a.key_len || c.dk != a.dk ||
                         c.dk_out.sb != a.dk_out.sb || c.dk_out.st != a.dk_out.st ||
                         c.v.sh != 0))
          return invalid("cross_modal attention backward: problems adding to one dk_out must share "
                         "their keys, key lengths and layout");
        done[j] = true;
        P.member[n_members++] = j;
        d = std::max({d, c.dk, c.dv});
      }
      u.n_members = n_members - u.member0;
      u.n_ch = static_cast<int>(ceil_div(d, dch));
      grid_kv += a.batch * (u.shared ? 1 : a.heads) * u.n_kb * u.n_ch;
    }
  }
  if (grid > INT_MAX || grid_kv > INT_MAX) return invalid("cross_modal attention: grid too large");
  return {};
}

template <typename T, int DCH>
LaunchStatus forward_typed(const Params& P, int64_t grid, cudaStream_t stream) {
  cross_modal_attention_forward_kernel<T, DCH>
      <<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P);
  const cudaError_t e = cudaGetLastError();
  return {e, e == cudaSuccess ? "" : "cross_modal_attention_forward_kernel"};
}

template <typename T, int DCH>
LaunchStatus backward_typed(const Params& P, int64_t grid, int64_t grid_kv, cudaStream_t stream) {
  cross_modal_attention_backward_dq_kernel<T, DCH>
      <<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(P);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return {e, "cross_modal_attention_backward_dq_kernel"};
  cross_modal_attention_backward_dkdv_kernel<T, DCH>
      <<<static_cast<unsigned>(grid_kv), kThreads, 0, stream>>>(P);
  e = cudaGetLastError();
  return {e, e == cudaSuccess ? "" : "cross_modal_attention_backward_dkdv_kernel"};
}

template <template <typename, int> class F, typename... Args>
LaunchStatus dispatch(DType dtype, int dch, Args&&... args) {
  switch (dtype) {
    case DType::F32:
      return dch == 64 ? F<float, 64>::run(args...) : F<float, 128>::run(args...);
    case DType::F16:
      return dch == 64 ? F<__half, 64>::run(args...) : F<__half, 128>::run(args...);
    case DType::BF16:
      return dch == 64 ? F<__nv_bfloat16, 64>::run(args...)
                       : F<__nv_bfloat16, 128>::run(args...);
    default:
      return invalid("cross_modal attention: CUDA kernels take float32, float16 or bfloat16");
  }
}

template <typename T, int DCH>
struct Forward {
  static LaunchStatus run(const Params& P, int64_t grid, cudaStream_t s) {
    return forward_typed<T, DCH>(P, grid, s);
  }
};
template <typename T, int DCH>
struct Backward {
  static LaunchStatus run(const Params& P, int64_t grid, int64_t grid_kv, cudaStream_t s) {
    return backward_typed<T, DCH>(P, grid, grid_kv, s);
  }
};

}  // namespace

LaunchStatus cross_modal_attention_simt_forward(DType dtype, const std::vector<AttentionProblem>& problems,
                                                const DropoutParams& dropout, cudaStream_t stream) {
  if (problems.empty() || problems[0].batch == 0) return {};
  const int dch = pick_chunk(problems);
  Params P;
  int64_t grid = 0, grid_kv = 0;
  LaunchStatus st = make_params(problems, dropout, dch, false, nullptr, P, grid, grid_kv);
  if (!st.ok()) return st;
  if (grid == 0) return {};
  return dispatch<Forward>(dtype, dch, P, grid, stream);
}

LaunchStatus cross_modal_attention_simt_backward(DType dtype, const std::vector<AttentionProblem>& problems,
                                                 const DropoutParams& dropout, void* workspace,
                                                 cudaStream_t stream) {
  if (problems.empty() || problems[0].batch == 0) return {};
  const int dch = pick_chunk(problems);
  Params P;
  int64_t grid = 0, grid_kv = 0;
  LaunchStatus st = make_params(problems, dropout, dch, true, static_cast<float*>(workspace), P,
                                grid, grid_kv);
  if (!st.ok()) return st;
  if (grid == 0) return {};
  return dispatch<Backward>(dtype, dch, P, grid, grid_kv, stream);
}

}  // namespace maven_fast::cuda
