// Tensor-core (mma.sync m16n8k16, bf16/fp16 in, fp32 accumulate) attention of
// the cross-modal block for sm_80 and sm_90, FlashAttention-2 style. Same
// semantics, saved tensors, Philox masks and deterministic backward as the
// SIMT kernels (cross_modal_attention_kernel.cu, which states the formulas):
//
//   s_ij = scale <q_i, k_j>,  p_ij = exp(s_ij - lse_i),  p~_ij = p_ij z_ij / (1 - p_drop)
//   o_i = sum_j p~_ij v_j,  lse_i = m_i + log l_i (online over key tiles),  psum_i = sum_j p~_ij
//   D_i = <do_i, o_i> + dpsum_i psum_i,  ds_ij = scale p_ij ((<do_i, v_j> + dpsum_i) z_ij / (1 - p_drop) - D_i)
//   dq_i = sum_j ds_ij k_j,  dk_j = sum_i ds_ij q_i,  dv_j = sum_i p~_ij do_i
//
// Which problems run here (cross_modal_attention_tc_eligible): own K and V per head (general
// pathways; the absorbed ones, K = V shared by the heads, stay on the SIMT
// kernels), dk = dv <= 256 and a multiple of 8, 16-byte aligned rows. The head
// dim is padded to HD = 64, 128 or 256 (zero-filled columns) and held whole by
// one CTA: no recomputation per column chunk.
//
// Forward (128 threads, 4 warps x 16 query rows, BM = 64): Q in shared memory;
// K and V tiles of BN keys double-buffered by cp.async (tile j + 1 lands while
// tile j is multiplied); S = Q K^T and O += P~ V by mma.sync with P~ kept in
// registers as the A operand (c_to_a), online softmax in fp32 per row (the
// four lanes of a quad share a row: shuffles xor 1, 2).
// dQ (128 threads, BM = 64): Q and dO resident, K and V tiles double-buffered;
// S, dP = dO V^T, dS in registers, dQ += dS K; D_i stored for the dK/dV kernel.
// dK/dV (256 threads, 64 keys per CTA and query tiles of 64, double-buffered;
// 32 and 32 at HD = 256): phase 1, warps split the query x key tile: S, dP ->
// P~ and dS rounded to T into shared memory; phase 2, warp (key group of 16,
// a slice of HD: half, or a quarter at HD = 256):
// dV += P~^T dO, dK += dS^T Q (A operands by ldmatrix.trans). Each key row has
// one owner: no atomics, deterministic. Dropout: one Philox call per (row,
// group of 4 keys) gives the CPU's words (two lanes of a quad share a call).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "common/smem_tiles.cuh"
#include "cross_modal/cross_modal_cuda.h"
#include "cross_modal/cross_modal_cuda_common.cuh"

namespace maven_fast::cuda {
namespace {

using cross_modal::AttentionProblem;
using cross_modal::DropoutParams;
using cross_modal::StridedSeq;
using cm::Dropout;
namespace tl = maven_fast::cuda::tiles;

constexpr int kMaxP = kCrossModalMaxProblems;
constexpr int kBM = 64;          // forward / dQ: queries per CTA (4 warps x 16)
constexpr int kFwdThreads = 128;
constexpr int kKvThreads = 256;  // dK/dV: 8 warps
constexpr int kPW = 64;          // dK/dV: row width of the p~ and ds tiles (>= keys per CTA)

// Key tile of the forward and dQ kernels; keys per CTA and query tile of the
// dK/dV kernel: halved at HD = 256 to stay within shared memory and registers.
template <int HD> constexpr int kBN = HD == 256 ? 32 : 64;
template <int HD> constexpr int kBNK = HD == 256 ? 32 : 64;
template <int HD> constexpr int kBMB = HD == 256 ? 32 : 64;

template <int HD> constexpr size_t fwd_smem_bytes() { return 2 * (kBM * HD + 4 * kBN<HD> * HD); }
template <int HD> constexpr size_t dq_smem_bytes() { return 2 * (2 * kBM * HD + 4 * kBN<HD> * HD); }
template <int HD> constexpr size_t kv_smem_bytes() {
  return 2 * (2 * kBNK<HD> * HD + 4 * kBMB<HD> * HD + 2 * kBMB<HD> * kPW);
}
static_assert(kv_smem_bytes<256>() <= 163 * 1024 && dq_smem_bytes<256>() <= 163 * 1024,
              "within an sm_80 block's shared memory");

struct TcProblem {
  StridedSeq q, k, v, o, dout, dq, dk_out, dv_out;
  const int64_t* key_len;
  float* lse;
  float* psum;
  const float* dpsum;
  int64_t first_cta;     // forward / dQ grid
  int64_t first_cta_kv;  // dK/dV grid
  int64_t d_offset;      // D rows in the workspace: [B, H, tq]
  int heads, tq, tk, d, n_qb, n_kb;
  uint32_t pathway;
  float scale;
};

struct TcParams {
  TcProblem p[kMaxP];
  int n_problems;
  int64_t batch;
  Dropout drop;
  float* dws;
};
static_assert(sizeof(TcParams) <= 4000, "kernel argument space (4 KB)");

template <typename T>
__device__ __forceinline__ const T* row_ptr(const StridedSeq& s, int64_t b, int64_t t, int64_t h) {
  return static_cast<const T*>(s.ptr) + b * s.sb + t * s.st + h * s.sh;
}
template <typename T>
__device__ __forceinline__ T* row_ptr_mut(const StridedSeq& s, int64_t b, int64_t t, int64_t h) {
  return static_cast<T*>(s.ptr) + b * s.sb + t * s.st + h * s.sh;
}

// The problem a forward / dQ (kv = false) or dK/dV (kv = true) CTA works on.
__device__ __forceinline__ int find_problem(const TcParams& P, int64_t cta, bool kv) {
  int pi = 0;
  while (pi + 1 < P.n_problems && cta >= (kv ? P.p[pi + 1].first_cta_kv : P.p[pi + 1].first_cta)) ++pi;
  return pi;
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Keep multipliers of keys j, j + 1 (j even) of query row i: words j % 4,
// j % 4 + 1 of the Philox call of (i, j / 4).
__device__ __forceinline__ void keep_pair(const Dropout& d, uint32_t stream, int64_t b, int i, int j, float& z0,
                                          float& z1) {
  float z[4];
  cm::keep4(d, stream, b, i, j & ~3, z);
  const bool upper = (j & 2) != 0;  // selects, not z[j & 3]: a dynamic index would put z in local memory
  z0 = upper ? z[2] : z[0];
  z1 = upper ? z[3] : z[1];
}

// Stores a pair of row values (c even) as T.
template <typename T>
__device__ __forceinline__ void store_row_pair(T* row, int c, float lo, float hi) {
  const uint32_t v = tl::pack2<T>(lo, hi);
  memcpy(row + c, &v, 4);
}

// S (16 rows of this warp x NB n8 blocks) = A_tile[m0..m0 + 16) . B_tile[n0..]^T
// over the HD columns; A, B tiles are [rows][HD].
template <typename T, int HD, int NB>
__device__ __forceinline__ void scores(float (&s)[NB][4], const T* a_tile, int m0, const T* b_tile, int n0) {
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int v = 0; v < 4; ++v) s[nb][v] = 0.f;
#pragma unroll
  for (int k0 = 0; k0 < HD; k0 += 16) {
    uint32_t a[4];
    tl::frag_a<HD>(a, a_tile, m0, k0);
#pragma unroll
    for (int nb = 0; nb + 1 < NB; nb += 2) {
      uint32_t b[4];
      tl::frag_b2<HD>(b, b_tile, n0 + 8 * nb, k0);
      tl::mma_2blocks<T>(s[nb], s[nb + 1], a, b);
    }
    if constexpr (NB % 2 == 1) {
      uint32_t b[2];
      tl::frag_b1<HD>(b, b_tile, n0 + 8 * (NB - 1), k0);
      mma::mma_16x8x16<T>(s[NB - 1], a, b);
    }
  }
}

// acc (16 rows x ND n8 blocks from column c0) += P (16 x 16 KS blocks, C
// fragments of 2 KS n8 blocks) . tile[k rows][c0..], the tile [k][HD].
template <typename T, int HD, int NB, int ND>
__device__ __forceinline__ void times_tile(float (&acc)[ND][4], const float (&p)[NB][4], const T* tile, int c0) {
#pragma unroll
  for (int kk = 0; kk < NB / 2; ++kk) {
    uint32_t a[4];
    tl::c_to_a<T>(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
    for (int nd = 0; nd < ND; nd += 2) {
      uint32_t b[4];
      tl::frag_b2_t<HD>(b, tile, c0 + 8 * nd, 16 * kk);
      tl::mma_2blocks<T>(acc[nd], acc[nd + 1], a, b);
    }
  }
}

// Loads key tile j0.. of K and V (keys >= len zero-filled) into stage `stage`
// of the [2][BN][HD] buffers sk, sv and commits the group (forward and dQ).
template <typename T, int HD, int BN>
__device__ __forceinline__ void load_kv_tile(T* sk, T* sv, const TcProblem& pr, const T* kp, const T* vp, int j0,
                                             int len, int stage) {
  const int off = stage * BN * HD, rows = min(BN, len - j0);
  tl::load_tile_async<HD>(sk + off, kp + j0 * pr.k.st, pr.k.st, BN, rows, pr.d, kFwdThreads);
  tl::load_tile_async<HD>(sv + off, vp + j0 * pr.v.st, pr.v.st, BN, rows, pr.d, kFwdThreads);
  mma::cp_async_commit();
}

// Double buffering: the next group (tile + 1) is in flight while this one is
// used; waits for this one's copies, then for every thread's (barrier).
__device__ __forceinline__ void wait_current_tile(bool next_in_flight) {
  if (next_in_flight) {
    mma::cp_async_wait<1>();
  } else {
    mma::cp_async_wait<0>();
  }
  __syncthreads();
}

// ---------------------------------------------------------------- forward
template <typename T, int HD>
__global__ void __launch_bounds__(kFwdThreads, 1) cross_modal_attention_tc_forward_kernel(
    const __grid_constant__ TcParams P) {
  constexpr int BN = kBN<HD>, NB = BN / 8, ND = HD / 8;
  extern __shared__ unsigned char tc_smem[];
  T* sq = reinterpret_cast<T*>(tc_smem);
  T* sk = sq + kBM * HD;     // [2][BN][HD]
  T* sv = sk + 2 * BN * HD;  // [2][BN][HD]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int64_t cta = blockIdx.x;
  const TcProblem& pr = P.p[find_problem(P, cta, false)];
  int64_t rem = cta - pr.first_cta;
  const int qb = static_cast<int>(rem % pr.n_qb);
  rem /= pr.n_qb;
  const int h = static_cast<int>(rem % pr.heads);
  const int64_t b = rem / pr.heads;
  if (b >= P.batch) return;  // not reached: the grid is the sum of the problems' CTAs

  const int len = cm::checked_len(pr.key_len[b], pr.tk, cross_modal::key_modality(static_cast<int>(pr.pathway)), b);
  const Dropout drop = cm::resolved(P.drop);
  const int tq = pr.tq, d = pr.d, i0 = qb * kBM;
  const float scale = pr.scale;
  const uint32_t stream = cross_modal::attention_stream(static_cast<int>(pr.pathway), h);
  const T* kp = row_ptr<T>(pr.k, b, 0, h);
  const T* vp = row_ptr<T>(pr.v, b, 0, h);
  const int n_tiles = (len + BN - 1) / BN;

  tl::load_tile_async<HD>(sq, row_ptr<T>(pr.q, b, i0, h), pr.q.st, kBM, min(kBM, tq - i0), d, kFwdThreads);
  if (n_tiles > 0) {
    load_kv_tile<T, HD, BN>(sk, sv, pr, kp, vp, 0, len, 0);  // one group with the rows above
  } else {
    mma::cp_async_commit();
  }

  float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, ps[2] = {0.f, 0.f};
#pragma unroll
  for (int nd = 0; nd < ND; ++nd)
#pragma unroll
    for (int v = 0; v < 4; ++v) o[nd][v] = 0.f;

  for (int tile = 0; tile < n_tiles; ++tile) {  // every tile has a valid key (CTA-uniform bounds)
    const int j0 = tile * BN, stage = tile & 1;
    if (tile + 1 < n_tiles) load_kv_tile<T, HD, BN>(sk, sv, pr, kp, vp, j0 + BN, len, stage ^ 1);
    wait_current_tile(tile + 1 < n_tiles);
    float s[NB][4];
    scores<T, HD, NB>(s, sq, 16 * warp, sk + stage * BN * HD, 0);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int i = i0 + 16 * warp + g + 8 * rr;
      float mx = -INFINITY;
#pragma unroll
      for (int nb = 0; nb < NB; ++nb)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = j0 + 8 * nb + 2 * t4 + e;
          float& x = s[nb][2 * rr + e];
          x = j < len ? x * scale : -INFINITY;
          mx = fmaxf(mx, x);
        }
      const float m_new = fmaxf(m[rr], quad_max(mx));  // finite: key j0 is valid
      const float alpha = expf(m[rr] - m_new);         // 0 on the first tile (m = -inf)
      float lsum = 0.f, psum = 0.f;
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        const int j = j0 + 8 * nb + 2 * t4;
        float z[2] = {1.f, 1.f};
        if (drop.on) keep_pair(drop, stream, b, i, j, z[0], z[1]);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[nb][2 * rr + e];
          const float p = expf(x - m_new);  // 0 for keys >= len (x = -inf)
          lsum += p;
          x = p * z[e];
          psum += x;
        }
      }
      l[rr] = l[rr] * alpha + quad_sum(lsum);
      ps[rr] = ps[rr] * alpha + quad_sum(psum);
      m[rr] = m_new;
#pragma unroll
      for (int nd = 0; nd < ND; ++nd) {
        o[nd][2 * rr] *= alpha;
        o[nd][2 * rr + 1] *= alpha;
      }
    }
    times_tile<T, HD, NB, ND>(o, s, sv + stage * BN * HD, 0);
    __syncthreads();  // this stage is refilled two tiles on
  }
  mma::cp_async_wait<0>();

#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int i = i0 + 16 * warp + g + 8 * rr;
    if (i >= tq) continue;
    const float inv = l[rr] > 0.f ? 1.f / l[rr] : 0.f;
    T* orow = row_ptr_mut<T>(pr.o, b, i, h);
#pragma unroll
    for (int nd = 0; nd < ND; ++nd) {
      const int c = 8 * nd + 2 * t4;
      if (c < d) store_row_pair<T>(orow, c, o[nd][2 * rr] * inv, o[nd][2 * rr + 1] * inv);
    }
    if (t4 == 0) {
      const int64_t idx = (b * pr.heads + h) * static_cast<int64_t>(tq) + i;
      pr.lse[idx] = l[rr] > 0.f ? m[rr] + logf(l[rr]) : INFINITY;
      if (pr.psum) pr.psum[idx] = l[rr] > 0.f ? ps[rr] * inv : 0.f;
    }
  }
}

// ---------------------------------------------------------------- backward: shared part
// Per query row: lse, D and the psum gradient (dpsum, 0 without one).
struct RowState {
  float lse = 0.f, D = 0.f, extra = 0.f;
};

// p (recomputed) and ds of one score element, in place: s holds the raw score
// on entry and p~ on exit, dp holds <do_i, v_j> on entry and ds on exit.
__device__ __forceinline__ void grad_element(float& s, float& dp, bool valid, float z, const RowState& r,
                                             float scale, bool drop_on) {
  const float p = valid ? expf(s * scale - r.lse) : 0.f;
  dp = drop_on ? scale * p * ((dp + r.extra) * z - r.D) : scale * p * (dp + r.extra - r.D);
  s = p * z;
}

// ---------------------------------------------------------------- backward: dQ (and D)
template <typename T, int HD>
__global__ void __launch_bounds__(kFwdThreads) cross_modal_attention_tc_dq_kernel(
    const __grid_constant__ TcParams P) {
  constexpr int BN = kBN<HD>, NB = BN / 8, ND = HD / 8;
  extern __shared__ unsigned char tc_smem[];
  T* sq = reinterpret_cast<T*>(tc_smem);
  T* sdo = sq + kBM * HD;
  T* sk = sdo + kBM * HD;    // [2][BN][HD]
  T* sv = sk + 2 * BN * HD;  // [2][BN][HD]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int64_t cta = blockIdx.x;
  const TcProblem& pr = P.p[find_problem(P, cta, false)];
  int64_t rem = cta - pr.first_cta;
  const int qb = static_cast<int>(rem % pr.n_qb);
  rem /= pr.n_qb;
  const int h = static_cast<int>(rem % pr.heads);
  const int64_t b = rem / pr.heads;
  if (b >= P.batch) return;

  const int len = cm::clamp_len(pr.key_len[b], pr.tk);
  const Dropout drop = cm::resolved(P.drop);
  const int tq = pr.tq, d = pr.d, i0 = qb * kBM, q_rows = min(kBM, tq - i0);
  const float scale = pr.scale;
  const uint32_t stream = cross_modal::attention_stream(static_cast<int>(pr.pathway), h);
  const T* kp = row_ptr<T>(pr.k, b, 0, h);
  const T* vp = row_ptr<T>(pr.v, b, 0, h);
  const int n_tiles = (len + BN - 1) / BN;

  tl::load_tile_async<HD>(sq, row_ptr<T>(pr.q, b, i0, h), pr.q.st, kBM, q_rows, d, kFwdThreads);
  tl::load_tile_async<HD>(sdo, row_ptr<T>(pr.dout, b, i0, h), pr.dout.st, kBM, q_rows, d, kFwdThreads);
  if (n_tiles > 0) {
    load_kv_tile<T, HD, BN>(sk, sv, pr, kp, vp, 0, len, 0);  // one group with the rows above
  } else {
    mma::cp_async_commit();
  }

  // D_i = <do_i, o_i> + dpsum_i psum_i from global memory while the tiles land:
  // the quad of row i sums columns 8 k + 2 t4, + 1.
  RowState rs[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int i = i0 + 16 * warp + g + 8 * rr;
    float acc = 0.f;
    if (i < tq) {
      const T* dorow = row_ptr<T>(pr.dout, b, i, h);
      const T* orow = row_ptr<T>(pr.o, b, i, h);
      for (int c = 2 * t4; c < d; c += 8)
        acc += cm::to_f(dorow[c]) * cm::to_f(orow[c]) + cm::to_f(dorow[c + 1]) * cm::to_f(orow[c + 1]);
    }
    acc = quad_sum(acc);
    if (i < tq) {
      const int64_t idx = (b * pr.heads + h) * static_cast<int64_t>(tq) + i;
      if (pr.dpsum) {
        rs[rr].extra = pr.dpsum[idx];
        acc += rs[rr].extra * pr.psum[idx];
      }
      rs[rr].lse = pr.lse[idx];
      rs[rr].D = acc;
      if (t4 == 0) P.dws[pr.d_offset + idx] = acc;
    }
  }

  float dq[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd)
#pragma unroll
    for (int v = 0; v < 4; ++v) dq[nd][v] = 0.f;

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int j0 = tile * BN, stage = tile & 1;
    if (tile + 1 < n_tiles) load_kv_tile<T, HD, BN>(sk, sv, pr, kp, vp, j0 + BN, len, stage ^ 1);
    wait_current_tile(tile + 1 < n_tiles);
    float s[NB][4], dp[NB][4];
    scores<T, HD, NB>(s, sq, 16 * warp, sk + stage * BN * HD, 0);
    scores<T, HD, NB>(dp, sdo, 16 * warp, sv + stage * BN * HD, 0);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int i = i0 + 16 * warp + g + 8 * rr;
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        const int j = j0 + 8 * nb + 2 * t4;
        float z[2] = {1.f, 1.f};
        if (drop.on) keep_pair(drop, stream, b, i, j, z[0], z[1]);
#pragma unroll
        for (int e = 0; e < 2; ++e)
          grad_element(s[nb][2 * rr + e], dp[nb][2 * rr + e], i < tq && j + e < len, z[e], rs[rr], scale,
                       drop.on);
      }
    }
    times_tile<T, HD, NB, ND>(dq, dp, sk + stage * BN * HD, 0);
    __syncthreads();
  }
  mma::cp_async_wait<0>();

#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int i = i0 + 16 * warp + g + 8 * rr;
    if (i >= tq) continue;
    T* row = row_ptr_mut<T>(pr.dq, b, i, h);
#pragma unroll
    for (int nd = 0; nd < ND; ++nd) {
      const int c = 8 * nd + 2 * t4;
      if (c < d) store_row_pair<T>(row, c, dq[nd][2 * rr], dq[nd][2 * rr + 1]);
    }
  }
}

// ---------------------------------------------------------------- backward: dK, dV
template <typename T, int HD>
__global__ void __launch_bounds__(kKvThreads, 1) cross_modal_attention_tc_dkdv_kernel(
    const __grid_constant__ TcParams P) {
  constexpr int BM = kBMB<HD>, BNK = kBNK<HD>;
  constexpr int QG = BM / 16, KW = BNK / (8 / QG), NB = KW / 8;  // phase 1: query groups, keys per warp
  constexpr int KG = BNK / 16, CW = HD / (8 / KG), NDH = CW / 8;  // phase 2: key groups, columns per warp
  static_assert(QG * (BNK / KW) == 8 && KG * (HD / CW) == 8 && NDH % 2 == 0 && BNK <= kPW,
                "8 warps cover the query x key tile and the key x column outputs");
  extern __shared__ unsigned char tc_smem[];
  T* sk = reinterpret_cast<T*>(tc_smem);  // [BNK][HD]
  T* sv = sk + BNK * HD;                  // [BNK][HD]
  T* sq = sv + BNK * HD;                  // [2][BM][HD]
  T* sdo = sq + 2 * BM * HD;              // [2][BM][HD]
  T* sp = sdo + 2 * BM * HD;              // [BM][kPW] p~
  T* sds = sp + BM * kPW;                 // [BM][kPW] ds
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int64_t cta = blockIdx.x;
  const TcProblem& pr = P.p[find_problem(P, cta, true)];
  int64_t rem = cta - pr.first_cta_kv;
  const int kb = static_cast<int>(rem % pr.n_kb);
  rem /= pr.n_kb;
  const int h = static_cast<int>(rem % pr.heads);
  const int64_t b = rem / pr.heads;
  if (b >= P.batch) return;

  const int len = cm::clamp_len(pr.key_len[b], pr.tk);
  const int tq = pr.tq, tk = pr.tk, d = pr.d, j0 = kb * BNK;
  const int kg = warp % KG, cs = warp / KG;  // phase 2: keys 16 kg.., columns CW cs..
  float acc_k[NDH][4], acc_v[NDH][4];
#pragma unroll
  for (int nd = 0; nd < NDH; ++nd)
#pragma unroll
    for (int v = 0; v < 4; ++v) acc_k[nd][v] = acc_v[nd][v] = 0.f;

  if (j0 < len) {  // CTA-uniform
    const Dropout drop = cm::resolved(P.drop);
    const float scale = pr.scale;
    const uint32_t stream = cross_modal::attention_stream(static_cast<int>(pr.pathway), h);
    const int k_rows = min(BNK, len - j0);
    const int qg = warp % QG, ks = warp / QG;  // phase 1: queries 16 qg.., keys KW ks..
    const int64_t row0 = (b * pr.heads + h) * static_cast<int64_t>(tq);
    const int n_qt = (tq + BM - 1) / BM;
    tl::load_tile_async<HD>(sk, row_ptr<T>(pr.k, b, j0, h), pr.k.st, BNK, k_rows, d, kKvThreads);
    tl::load_tile_async<HD>(sv, row_ptr<T>(pr.v, b, j0, h), pr.v.st, BNK, k_rows, d, kKvThreads);
    tl::load_tile_async<HD>(sq, row_ptr<T>(pr.q, b, 0, h), pr.q.st, BM, min(BM, tq), d, kKvThreads);
    tl::load_tile_async<HD>(sdo, row_ptr<T>(pr.dout, b, 0, h), pr.dout.st, BM, min(BM, tq), d, kKvThreads);
    mma::cp_async_commit();
    for (int qt = 0; qt < n_qt; ++qt) {
      const int q0 = qt * BM, stage = qt & 1;
      if (qt + 1 < n_qt) {
        const int qn = q0 + BM, nxt = (stage ^ 1) * BM * HD;
        tl::load_tile_async<HD>(sq + nxt, row_ptr<T>(pr.q, b, qn, h), pr.q.st, BM, min(BM, tq - qn), d, kKvThreads);
        tl::load_tile_async<HD>(sdo + nxt, row_ptr<T>(pr.dout, b, qn, h), pr.dout.st, BM, min(BM, tq - qn), d,
                                kKvThreads);
        mma::cp_async_commit();
        mma::cp_async_wait<1>();
      } else {
        mma::cp_async_wait<0>();
      }
      __syncthreads();
      const T* sq_t = sq + stage * BM * HD;
      const T* sdo_t = sdo + stage * BM * HD;
      // Phase 1: p~ and ds of queries 16 qg.. x keys KW ks.. into shared memory.
      float s[NB][4], dp[NB][4];
      scores<T, HD, NB>(s, sq_t, 16 * qg, sk, KW * ks);
      scores<T, HD, NB>(dp, sdo_t, 16 * qg, sv, KW * ks);
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int r = 16 * qg + g + 8 * rr, i = q0 + r;
        RowState rs;
        if (i < tq) {
          rs.lse = pr.lse[row0 + i];
          rs.D = P.dws[pr.d_offset + row0 + i];
          if (pr.dpsum) rs.extra = pr.dpsum[row0 + i];
        }
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
          const int c = KW * ks + 8 * nb + 2 * t4, j = j0 + c;
          float z[2] = {1.f, 1.f};
          if (drop.on) keep_pair(drop, stream, b, i, j, z[0], z[1]);
#pragma unroll
          for (int e = 0; e < 2; ++e)
            grad_element(s[nb][2 * rr + e], dp[nb][2 * rr + e], i < tq && j + e < len, z[e], rs, scale, drop.on);
          tl::store_pair<kPW>(sp, r, c, s[nb][2 * rr], s[nb][2 * rr + 1]);
          tl::store_pair<kPW>(sds, r, c, dp[nb][2 * rr], dp[nb][2 * rr + 1]);
        }
      }
      __syncthreads();
      // Phase 2: dV += p~^T dO, dK += ds^T Q for keys 16 kg.., columns CW cs...
#pragma unroll
      for (int k0 = 0; k0 < BM; k0 += 16) {
        uint32_t ap[4], ads[4];
        tl::frag_a_t<kPW>(ap, sp, 16 * kg, k0);
        tl::frag_a_t<kPW>(ads, sds, 16 * kg, k0);
#pragma unroll
        for (int nd = 0; nd < NDH; nd += 2) {
          uint32_t bb[4];
          tl::frag_b2_t<HD>(bb, sdo_t, CW * cs + 8 * nd, k0);
          tl::mma_2blocks<T>(acc_v[nd], acc_v[nd + 1], ap, bb);
          tl::frag_b2_t<HD>(bb, sq_t, CW * cs + 8 * nd, k0);
          tl::mma_2blocks<T>(acc_k[nd], acc_k[nd + 1], ads, bb);
        }
      }
      __syncthreads();  // sp, sds and this stage are rewritten next
    }
  }

  // Every key row < tk of this block is written: rows >= len get 0.
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int j = j0 + 16 * kg + g + 8 * rr;
    if (j >= tk) continue;
    const bool in = j < len;
    T* krow = row_ptr_mut<T>(pr.dk_out, b, j, h);
    T* vrow = row_ptr_mut<T>(pr.dv_out, b, j, h);
#pragma unroll
    for (int nd = 0; nd < NDH; ++nd) {
      const int c = CW * cs + 8 * nd + 2 * t4;
      if (c >= d) continue;
      store_row_pair<T>(krow, c, in ? acc_k[nd][2 * rr] : 0.f, in ? acc_k[nd][2 * rr + 1] : 0.f);
      store_row_pair<T>(vrow, c, in ? acc_v[nd][2 * rr] : 0.f, in ? acc_v[nd][2 * rr + 1] : 0.f);
    }
  }
}

// ---------------------------------------------------------------- host side
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

LaunchStatus invalid(const char* what) { return {cudaErrorInvalidValue, what}; }

bool aligned16(const StridedSeq& s) {
  return s.ptr == nullptr ||
         (reinterpret_cast<uintptr_t>(s.ptr) % 16 == 0 && s.sb % 8 == 0 && s.st % 8 == 0 && s.sh % 8 == 0);
}

// The padded head dim of a set of eligible problems.
int head_dim_class(const std::vector<AttentionProblem>& problems) {
  int64_t d = 0;
  for (const auto& p : problems) d = std::max(d, p.dk);
  return d <= 64 ? 64 : (d <= 128 ? 128 : 256);
}

LaunchStatus make_params(const std::vector<AttentionProblem>& problems, const DropoutParams& drop, float* dws,
                         TcParams& P, int64_t& grid, int64_t& grid_kv) {
  const int bnk = head_dim_class(problems) == 256 ? kBNK<256> : kBNK<64>;
  if (problems.empty() || problems.size() > static_cast<size_t>(kMaxP))
    return invalid("cross_modal attention (tensor cores): 1 to 6 problems per launch");
  P = TcParams{};
  P.n_problems = static_cast<int>(problems.size());
  P.batch = problems[0].batch;
  P.drop = cm::make_dropout(drop);
  P.dws = dws;
  grid = grid_kv = 0;
  int64_t d_rows = 0;
  for (int i = 0; i < P.n_problems; ++i) {
    const AttentionProblem& a = problems[i];
    if (a.batch != P.batch) return invalid("cross_modal attention: problems of one launch share the batch");
    if (a.heads < 1 || a.heads > INT_MAX / 2 || a.tq < 1 || a.tq > INT_MAX / 2 || a.tk < 1 || a.tk > INT_MAX / 2)
      return invalid("cross_modal attention: sizes must be in [1, 2^30)");
    if (!a.key_len || !a.lse) return invalid("cross_modal attention: key_len and lse are required");
    if (a.dpsum && !a.psum) return invalid("cross_modal attention backward: dpsum needs psum");
    TcProblem& p = P.p[i];
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
    p.heads = static_cast<int>(a.heads);
    p.tq = static_cast<int>(a.tq);
    p.tk = static_cast<int>(a.tk);
    p.d = static_cast<int>(a.dk);
    p.pathway = static_cast<uint32_t>(a.pathway);
    p.scale = static_cast<float>(a.scale);
    p.n_qb = static_cast<int>(ceil_div(a.tq, kBM));
    p.n_kb = static_cast<int>(ceil_div(a.tk, bnk));
    p.first_cta = grid;
    p.first_cta_kv = grid_kv;
    p.d_offset = d_rows;
    grid += a.batch * a.heads * p.n_qb;
    grid_kv += a.batch * a.heads * p.n_kb;
    d_rows += a.batch * a.heads * a.tq;
  }
  if (grid > INT_MAX || grid_kv > INT_MAX) return invalid("cross_modal attention: grid too large");
  return {};
}

template <typename K>
LaunchStatus launch(K kernel, const char* name, int64_t grid, int threads, size_t smem, const TcParams& P,
                    cudaStream_t stream) {
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e != cudaSuccess) return {e, name};
  kernel<<<static_cast<unsigned>(grid), threads, smem, stream>>>(P);
  e = cudaGetLastError();
  return {e, e == cudaSuccess ? "" : name};
}

template <typename T, int HD>
LaunchStatus forward_typed(const TcParams& P, int64_t grid, cudaStream_t stream) {
  return launch(cross_modal_attention_tc_forward_kernel<T, HD>, "cross_modal_attention_tc_forward_kernel", grid,
                kFwdThreads, fwd_smem_bytes<HD>(), P, stream);
}

template <typename T, int HD>
LaunchStatus backward_typed(const TcParams& P, int64_t grid, int64_t grid_kv, cudaStream_t stream) {
  const LaunchStatus st = launch(cross_modal_attention_tc_dq_kernel<T, HD>, "cross_modal_attention_tc_dq_kernel",
                                 grid, kFwdThreads, dq_smem_bytes<HD>(), P, stream);
  if (!st.ok()) return st;
  return launch(cross_modal_attention_tc_dkdv_kernel<T, HD>, "cross_modal_attention_tc_dkdv_kernel", grid_kv,
                kKvThreads, kv_smem_bytes<HD>(), P, stream);
}

template <typename T>
LaunchStatus forward_hd(int hd, const TcParams& P, int64_t grid, cudaStream_t s) {
  return hd == 64 ? forward_typed<T, 64>(P, grid, s)
                  : (hd == 128 ? forward_typed<T, 128>(P, grid, s) : forward_typed<T, 256>(P, grid, s));
}
template <typename T>
LaunchStatus backward_hd(int hd, const TcParams& P, int64_t grid, int64_t grid_kv, cudaStream_t s) {
  return hd == 64 ? backward_typed<T, 64>(P, grid, grid_kv, s)
                  : (hd == 128 ? backward_typed<T, 128>(P, grid, grid_kv, s)
                               : backward_typed<T, 256>(P, grid, grid_kv, s));
}

}  // namespace

bool cross_modal_attention_tc_eligible(DType dtype, const AttentionProblem& a) {
  return (dtype == DType::BF16 || dtype == DType::F16) && a.k.sh != 0 && a.v.sh != 0 && a.dk == a.dv &&
         a.dk >= 8 && a.dk <= 256 && a.dk % 8 == 0 && aligned16(a.q) && aligned16(a.k) && aligned16(a.v) &&
         aligned16(a.o) && aligned16(a.dout) && aligned16(a.dq) && aligned16(a.dk_out) && aligned16(a.dv_out);
}

LaunchStatus cross_modal_attention_tc_forward(DType dtype, const std::vector<AttentionProblem>& problems,
                                              const DropoutParams& dropout, cudaStream_t stream) {
  if (problems.empty() || problems[0].batch == 0) return {};
  for (const auto& a : problems)
    if (!cross_modal_attention_tc_eligible(dtype, a)) return invalid("cross_modal attention: not a tensor-core problem");
  TcParams P;
  int64_t grid = 0, grid_kv = 0;
  LaunchStatus st = make_params(problems, dropout, nullptr, P, grid, grid_kv);
  if (!st.ok() || grid == 0) return st;
  const int hd = head_dim_class(problems);
  return dtype == DType::BF16 ? forward_hd<__nv_bfloat16>(hd, P, grid, stream) : forward_hd<__half>(hd, P, grid, stream);
}

LaunchStatus cross_modal_attention_tc_backward(DType dtype, const std::vector<AttentionProblem>& problems,
                                               const DropoutParams& dropout, void* workspace, cudaStream_t stream) {
  if (problems.empty() || problems[0].batch == 0) return {};
  for (const auto& a : problems)
    if (!cross_modal_attention_tc_eligible(dtype, a)) return invalid("cross_modal attention: not a tensor-core problem");
  TcParams P;
  int64_t grid = 0, grid_kv = 0;
  LaunchStatus st = make_params(problems, dropout, static_cast<float*>(workspace), P, grid, grid_kv);
  if (!st.ok() || grid == 0) return st;
  const int hd = head_dim_class(problems);
  return dtype == DType::BF16 ? backward_hd<__nv_bfloat16>(hd, P, grid, grid_kv, stream)
                              : backward_hd<__half>(hd, P, grid, grid_kv, stream);
}

}  // namespace maven_fast::cuda
