// CUDA combination of the cross-modal block (residual + /3 + dropout +
// LayerNorm) for all three modalities: ONE launch forward, ONE launch backward
// plus a tiny ordered reduction. Same semantics as
// cross_modal_combine_cpu_kernel.cpp (which defines them):
//
//   sum_r = x_r + rows_r + sum_items [ bias + (len_b > 0) sum_h k_rh c_bh ]
//   u_r   = (sum_r / 3) * z_r / (1 - p_out)                 (z: Philox keep mask, stream 6 + m)
//   y_r   = (u_r - mean(u_r)) * rstd_r * gamma + beta,  rstd_r = 1 / sqrt(var(u_r) + eps)
// k_rh: attention-dropout keep multiplier of item term (pathway, head h) on row
// i of item b (Philox word 0 of counter (0, i, 16 h + pathway, b + offset));
// 1 without attention dropout (then c is already summed over the heads).
// Backward, with g_r = dL/dy_r, xhat = (u - mean) rstd:
//   dgamma = sum_r g_r xhat_r,  dbeta = sum_r g_r
//   du_r   = rstd_r (g_r gamma - mean(g_r gamma) - xhat_r mean(g_r gamma xhat_r))
//   dsum_r = du_r z_r / (3 (1 - p_out))       (= dL/dx_r = dL/drows_r)
//   dc_bh  = (len_b > 0) sum_{r in b} k_rh dsum_r,   dbias_rows = sum_r dsum_r
//
// Forward: one warp per row (grid-stride over the rows of the three
// modalities); each lane owns the columns 4 lane + 128 k + (0..3) of the row
// (one Philox call per 4 columns), kept as fp32 in the warp's shared-memory
// row, so the two-pass mean/variance never re-reads global memory.
// Backward: one CTA per (modality, batch item), i.e. per CPU task. Rows are
// processed in chunks of `rc`: phase A, one warp per row, computes the row
// reductions and dsum (written to grad_sum and kept in shared memory); phase
// B, one thread per column, accumulates dgamma, dbeta, dbias_rows and the
// item-term gradients over the chunk's rows in a fixed order into fp32
// accumulators in the workspace that only this CTA (and only that thread)
// touches. The item gradients are complete per CTA (a CTA owns item b); the
// per-CTA partial sums of dgamma, dbeta and dbias_rows are added by a second,
// tiny kernel in task order (modality-major, then batch item), as the CPU
// kernel does. No atomics: the results are deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "cross_modal/cross_modal_cuda.h"
#include "cross_modal/cross_modal_cuda_common.cuh"

namespace maven_fast::cuda {
namespace {

using cross_modal::CombineModality;
using cross_modal::CombineParams;
using cm::Dropout;
using cm::from_f;
using cm::to_f;

constexpr int kMaxItems = kCrossModalMaxItems;
constexpr int kNumMod = cross_modal::kNumModalities;
constexpr int kBwdThreads = 256;
constexpr int kReduceThreads = 256;
constexpr int kMaxRowChunk = 16;
constexpr size_t kDefaultSmem = 48 * 1024;

struct Item {
  const void* c;         // [B, heads, D]
  const void* bias;      // [D]
  const int64_t* key_len;  // [B]: > 0 means the item has its key
  void* grad_c;          // [B, heads, D] (backward)
  int64_t dc_offset;     // floats into the workspace's item accumulators
  int heads, kh0;        // kh0: index of head 0 among the modality's item heads
  uint32_t pathway;
};

struct Mod {
  const void* x;
  const void* rows;
  void* u;
  float* stats;
  void* y;
  const void* grad_y;
  void* grad_sum;
  float* grad_bias_rows;
  Item items[kMaxItems];
  int n_items, kh;  // kh: sum of the items' heads
  int t, modality;
  int64_t first_row;
};

struct Args {
  Mod m[kNumMod];
  const void* ln_w;
  const void* ln_b;
  float eps;
  int d;
  int rc;      // backward: rows per chunk
  int kh_max;  // backward: max over modalities of kh
  int64_t batch, total_rows;
  Dropout attn, out;
  int64_t* rng_out;  // forward: (seed, offset) of out.rng for the backward, or null
  float* grad_ln_w;
  float* grad_ln_b;
  float* partial;  // [3 B][3][D]
  float* dc;       // item accumulators
};
static_assert(sizeof(Args) <= 4000, "kernel argument space (4 KB)");

__device__ __forceinline__ float warp_sum(float v) { return cm::group_sum<32>(v); }

__device__ __forceinline__ bool has_key(const Item& it, int64_t b) { return it.key_len[b] > 0; }

// ---------------------------------------------------------------- forward
template <typename T>
__global__ void __launch_bounds__(128, 4)
    cross_modal_combine_forward_kernel(const __grid_constant__ Args A) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int d = A.d;
  float* buf = smem + static_cast<int64_t>(warp) * d;
  const T* gamma = static_cast<const T*>(A.ln_w);
  const T* beta = static_cast<const T*>(A.ln_b);
  const float third = 1.f / 3.f;
  const Dropout attn = cm::resolved(A.attn), out = cm::resolved(A.out);
  if (A.rng_out && blockIdx.x == 0 && threadIdx.x == 0) cross_modal::store_rng(A.out.rng, A.rng_out);
  for (int64_t ra = static_cast<int64_t>(blockIdx.x) * warps + warp; ra < A.total_rows;
       ra += static_cast<int64_t>(gridDim.x) * warps) {
    const int mi = ra >= A.m[2].first_row ? 2 : (ra >= A.m[1].first_row ? 1 : 0);
    const Mod& M = A.m[mi];
    const int64_t r = ra - M.first_row, b = r / M.t, i = r % M.t;
    const int64_t off = r * d;
    const T* x = static_cast<const T*>(M.x) + off;
    const T* rows = M.rows ? static_cast<const T*>(M.rows) + off : nullptr;
    if (i == 0 && lane == 0) {  // key-length-1 items: their key lengths are 0 or 1
      for (int k = 0; k < M.n_items; ++k) {
        const Item& it = M.items[k];
        cm::checked_len(it.key_len[b], 1, cross_modal::key_modality(static_cast<int>(it.pathway)), b);
      }
    }
    // 1. The sum, before dropout.
    for (int c4 = 4 * lane; c4 < d; c4 += 128) {
      for (int c = c4; c < min(c4 + 4, d); ++c) {
        float s = to_f(x[c]);
        if (rows) s += to_f(rows[c]);
        for (int k = 0; k < M.n_items; ++k) {
          const Item& it = M.items[k];
          s += to_f(static_cast<const T*>(it.bias)[c]);
          if (!attn.on && has_key(it, b)) s += to_f(static_cast<const T*>(it.c)[b * d + c]);
        }
        buf[c] = s;
      }
    }
    if (attn.on) {  // per-head item values, with this row's attention-dropout multipliers
      for (int k = 0; k < M.n_items; ++k) {
        const Item& it = M.items[k];
        if (!has_key(it, b)) continue;
        for (int h = 0; h < it.heads; ++h) {
          const float kk =
              cm::keep1(attn, cross_modal::attention_stream(static_cast<int>(it.pathway), h), b, i);
          if (kk == 0.f) continue;
          const T* cv = static_cast<const T*>(it.c) + (b * it.heads + h) * d;
          for (int c4 = 4 * lane; c4 < d; c4 += 128)
            for (int c = c4; c < min(c4 + 4, d); ++c) buf[c] += kk * to_f(cv[c]);
        }
      }
    }
    // 2. /3 and output dropout; the mean.
    float sum = 0.f;
    for (int c4 = 4 * lane; c4 < d; c4 += 128) {
      float z[4] = {1.f, 1.f, 1.f, 1.f};
      if (out.on) cm::keep4(out, cross_modal::output_stream(M.modality), b, i, c4, z);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        if (c4 + u >= d) break;
        float v = buf[c4 + u];
        if (out.on) {
          v = z[u] != 0.f ? v * (third * out.inv_keep) : 0.f;
        } else {
          v *= third;
        }
        buf[c4 + u] = v;
        sum += v;
      }
    }
    const float mean = warp_sum(sum) / d;
    float sq = 0.f;
    for (int c4 = 4 * lane; c4 < d; c4 += 128)
      for (int c = c4; c < min(c4 + 4, d); ++c) sq += (buf[c] - mean) * (buf[c] - mean);
    const float rstd = 1.f / sqrtf(warp_sum(sq) / d + A.eps);
    // 3. LayerNorm.
    T* u = static_cast<T*>(M.u) + off;
    T* y = static_cast<T*>(M.y) + off;
    for (int c4 = 4 * lane; c4 < d; c4 += 128) {
      for (int c = c4; c < min(c4 + 4, d); ++c) {
        const float v = buf[c];
        u[c] = from_f<T>(v);
        y[c] = from_f<T>((v - mean) * rstd * to_f(gamma[c]) + to_f(beta[c]));
      }
    }
    if (lane == 0) {
      M.stats[2 * r] = mean;
      M.stats[2 * r + 1] = rstd;
    }
  }
}

// ---------------------------------------------------------------- backward
template <typename T>
__global__ void __launch_bounds__(kBwdThreads, 2)
    cross_modal_combine_backward_kernel(const __grid_constant__ Args A) {
  extern __shared__ float smem[];
  const int d = A.d, rc = A.rc, khm = A.kh_max;
  float* dx_s = smem;                                    // [rc][d]
  float* keep_s = dx_s + static_cast<int64_t>(rc) * d;   // [rc][kh_max]
  float* stat_s = keep_s + static_cast<int64_t>(rc) * khm;  // [rc][2]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int64_t task = blockIdx.x;
  const int mi = static_cast<int>(task / A.batch);
  const int64_t b = task % A.batch;
  const Mod& M = A.m[mi];
  const int tm = M.t;
  const T* gamma = static_cast<const T*>(A.ln_w);
  const T* gy = static_cast<const T*>(M.grad_y);
  const T* uu = static_cast<const T*>(M.u);
  T* gsum = static_cast<T*>(M.grad_sum);
  float* part = A.partial + task * 3 * d;
  const float third = 1.f / 3.f;
  const Dropout attn = cm::resolved(A.attn), out = cm::resolved(A.out);

  for (int i0 = 0; i0 < tm; i0 += rc) {
    const int n = min(rc, tm - i0);
    // Phase A: one warp per row.
    for (int rr = warp; rr < n; rr += warps) {
      const int64_t i = i0 + rr, r = b * tm + i, off = r * d;
      const float mean = M.stats[2 * r], rstd = M.stats[2 * r + 1];
      float* dx = dx_s + static_cast<int64_t>(rr) * d;
      float s1 = 0.f, s2 = 0.f;
      for (int c4 = 4 * lane; c4 < d; c4 += 128) {
        for (int c = c4; c < min(c4 + 4, d); ++c) {
          const float xh = (to_f(uu[off + c]) - mean) * rstd;
          const float gg = to_f(gy[off + c]) * to_f(gamma[c]);
          dx[c] = gg;
          s1 += gg;
          s2 += gg * xh;
        }
      }
      const float mean_dx = warp_sum(s1) / d, mean_dx_xhat = warp_sum(s2) / d;
      for (int c4 = 4 * lane; c4 < d; c4 += 128) {
        float z[4] = {1.f, 1.f, 1.f, 1.f};
        if (out.on) cm::keep4(out, cross_modal::output_stream(M.modality), b, i, c4, z);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int c = c4 + u;
          if (c >= d) break;
          const float xh = (to_f(uu[off + c]) - mean) * rstd;
          float v = (rstd * third) * (dx[c] - mean_dx - xh * mean_dx_xhat);
          if (out.on) v = z[u] != 0.f ? v * out.inv_keep : 0.f;
          dx[c] = v;
          gsum[off + c] = from_f<T>(v);
        }
      }
      for (int kh = lane; kh < M.kh; kh += 32) {
        const int k = (M.n_items > 1 && kh >= M.items[1].kh0) ? 1 : 0;
        const Item& it = M.items[k];
        const int h = kh - it.kh0;
        float kk = 0.f;
        if (has_key(it, b))
          kk = attn.on ? cm::keep1(attn,
                                     cross_modal::attention_stream(static_cast<int>(it.pathway), h),
                                     b, i)
                         : 1.f;
        keep_s[rr * khm + kh] = kk;
      }
      if (lane == 0) {
        stat_s[2 * rr] = mean;
        stat_s[2 * rr + 1] = rstd;
      }
    }
    __syncthreads();
    // Phase B: one thread per column, rows in order.
    const bool first = i0 == 0;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
      float dg = first ? 0.f : part[c];
      float db = first ? 0.f : part[d + c];
      float dbias = first ? 0.f : part[2 * d + c];
      for (int rr = 0; rr < n; ++rr) {
        const int64_t off = (b * tm + i0 + rr) * d;
        const float g = to_f(gy[off + c]);
        const float xh = (to_f(uu[off + c]) - stat_s[2 * rr]) * stat_s[2 * rr + 1];
        dg += g * xh;
        db += g;
        dbias += dx_s[rr * d + c];
      }
      part[c] = dg;
      part[d + c] = db;
      part[2 * d + c] = dbias;
      for (int k = 0; k < M.n_items; ++k) {
        const Item& it = M.items[k];
        for (int h = 0; h < it.heads; ++h) {
          float* acc = A.dc + it.dc_offset + (b * it.heads + h) * d + c;
          float v = first ? 0.f : *acc;
          for (int rr = 0; rr < n; ++rr) v += keep_s[rr * khm + it.kh0 + h] * dx_s[rr * d + c];
          *acc = v;
        }
      }
    }
    __syncthreads();
  }
  // The item gradients of item b are complete (same thread owns each column).
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    for (int k = 0; k < M.n_items; ++k) {
      const Item& it = M.items[k];
      for (int h = 0; h < it.heads; ++h) {
        const int64_t idx = (b * it.heads + h) * d + c;
        static_cast<T*>(it.grad_c)[idx] = from_f<T>(A.dc[it.dc_offset + idx]);
      }
    }
  }
}

// dgamma, dbeta (all tasks) and dbias_rows (tasks of each modality), summed in
// task order; zeros when there are no tasks.
__global__ void cross_modal_combine_reduce_kernel(const __grid_constant__ Args A) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= A.d) return;
  const int d = A.d;
  float g = 0.f, be = 0.f;
  for (int mi = 0; mi < kNumMod; ++mi) {
    float bi = 0.f;
    for (int64_t b = 0; b < A.batch; ++b) {
      const float* p = A.partial + (mi * A.batch + b) * 3 * d;
      g += p[c];
      be += p[d + c];
      bi += p[2 * d + c];
    }
    if (A.m[mi].grad_bias_rows) A.m[mi].grad_bias_rows[c] = bi;
  }
  A.grad_ln_w[c] = g;
  A.grad_ln_b[c] = be;
}

// ---------------------------------------------------------------- host side
LaunchStatus invalid(const char* what) { return {cudaErrorInvalidValue, what}; }

LaunchStatus make_args(const CombineParams& P, bool backward, Args& A) {
  A = Args{};
  const int64_t d = P.m[0].d, batch = P.m[0].batch;
  if (d < 1 || d > INT_MAX / 8) return invalid("cross_modal combine: D must be in [1, 2^28)");
  A.d = static_cast<int>(d);
  A.batch = batch;
  A.ln_w = P.ln_weight;
  A.ln_b = P.ln_bias;
  A.eps = static_cast<float>(P.eps);
  A.attn = cm::make_dropout(P.attn_dropout);
  A.out = cm::make_dropout(P.out_dropout);
  A.rng_out = backward ? nullptr : P.rng_out;
  A.grad_ln_w = static_cast<float*>(P.grad_ln_weight);
  A.grad_ln_b = static_cast<float*>(P.grad_ln_bias);
  int64_t rows = 0, dc = 0;
  for (int mi = 0; mi < kNumMod; ++mi) {
    const CombineModality& S = P.m[mi];
    if (S.d != d || S.batch != batch) return invalid("cross_modal combine: modalities share B and D");
    if (S.t < 1 || S.t > INT_MAX / 2) return invalid("cross_modal combine: T must be in [1, 2^30)");
    if (S.items.size() > static_cast<size_t>(kMaxItems))
      return invalid("cross_modal combine: at most 2 item terms per modality");
    if (backward && S.grad_c.size() != S.items.size())
      return invalid("cross_modal combine backward: one grad_c per item term");
    Mod& M = A.m[mi];
    M.x = S.x;
    M.rows = S.rows;
    M.u = S.u;
    M.stats = static_cast<float*>(S.stats);
    M.y = S.y;
    M.grad_y = S.grad_y;
    M.grad_sum = S.grad_sum;
    M.grad_bias_rows = static_cast<float*>(S.grad_bias_rows);
    M.t = static_cast<int>(S.t);
    M.modality = S.modality;
    M.first_row = rows;
    rows += batch * S.t;
    M.n_items = static_cast<int>(S.items.size());
    M.kh = 0;
    for (int k = 0; k < M.n_items; ++k) {
      const auto& it = S.items[k];
      if (it.heads < 1 || it.heads > INT_MAX / 4) return invalid("cross_modal combine: item heads");
      Item& I = M.items[k];
      I.c = it.c;
      I.bias = it.bias;
      I.key_len = it.key_len;
      I.grad_c = backward ? S.grad_c[k] : nullptr;
      I.heads = static_cast<int>(it.heads);
      I.kh0 = M.kh;
      I.pathway = static_cast<uint32_t>(it.pathway);
      I.dc_offset = dc;
      dc += batch * it.heads * d;
      M.kh += I.heads;
    }
    A.kh_max = std::max(A.kh_max, M.kh);
  }
  A.total_rows = rows;
  // Backward row chunk: dx rows + keep multipliers + stats within 48 KB when possible.
  const int64_t per_row = d + A.kh_max + 2;
  A.rc = static_cast<int>(std::clamp<int64_t>(12288 / per_row, 1, kMaxRowChunk));
  return {};
}

size_t partial_floats(const Args& A) { return static_cast<size_t>(kNumMod * A.batch * 3) * A.d; }

template <typename Kernel>
cudaError_t set_smem(Kernel kernel, size_t smem) {
  if (smem <= kDefaultSmem) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem));
}

template <typename T>
LaunchStatus forward_typed(const Args& A, cudaStream_t stream) {
  const int warps = static_cast<size_t>(A.d) * 4 * sizeof(float) <= kDefaultSmem ? 4 : 1;
  const size_t smem = static_cast<size_t>(warps) * A.d * sizeof(float);
  const int64_t blocks = std::min<int64_t>((A.total_rows + warps - 1) / warps, INT_MAX);
  cudaError_t e = set_smem(cross_modal_combine_forward_kernel<T>, smem);
  if (e == cudaSuccess) {
    cross_modal_combine_forward_kernel<T>
        <<<static_cast<unsigned>(blocks), warps * 32, smem, stream>>>(A);
    e = cudaGetLastError();
  }
  return {e, e == cudaSuccess ? "" : "cross_modal_combine_forward_kernel"};
}

template <typename T>
LaunchStatus backward_typed(const Args& A, cudaStream_t stream) {
  const int64_t tasks = kNumMod * A.batch;
  if (tasks > 0) {
    const size_t smem =
        static_cast<size_t>(A.rc) * (static_cast<size_t>(A.d) + A.kh_max + 2) * sizeof(float);
    cudaError_t e = set_smem(cross_modal_combine_backward_kernel<T>, smem);
    if (e == cudaSuccess) {
      cross_modal_combine_backward_kernel<T>
          <<<static_cast<unsigned>(tasks), kBwdThreads, smem, stream>>>(A);
      e = cudaGetLastError();
    }
    if (e != cudaSuccess) return {e, "cross_modal_combine_backward_kernel"};
  }
  cross_modal_combine_reduce_kernel<<<(A.d + kReduceThreads - 1) / kReduceThreads, kReduceThreads,
                                      0, stream>>>(A);
  const cudaError_t e = cudaGetLastError();
  return {e, e == cudaSuccess ? "" : "cross_modal_combine_reduce_kernel"};
}

}  // namespace

size_t cross_modal_combine_backward_workspace_bytes(const CombineParams& params) {
  Args A;
  if (!make_args(params, true, A).ok()) return sizeof(float);
  size_t dc = 0;
  for (const auto& M : A.m)
    for (int k = 0; k < M.n_items; ++k)
      dc += static_cast<size_t>(A.batch) * M.items[k].heads * A.d;
  return std::max<size_t>(partial_floats(A) + dc, 1) * sizeof(float);
}

LaunchStatus cross_modal_combine_forward(DType dtype, const CombineParams& params,
                                         cudaStream_t stream) {
  Args A;
  LaunchStatus st = make_args(params, false, A);
  if (!st.ok()) return st;
  if (A.total_rows > INT_MAX) return invalid("cross_modal combine: too many rows");
  if (A.total_rows == 0) return {};
  switch (dtype) {
    case DType::F32: return forward_typed<float>(A, stream);
    case DType::F16: return forward_typed<__half>(A, stream);
    case DType::BF16: return forward_typed<__nv_bfloat16>(A, stream);
    default: return invalid("cross_modal combine: CUDA kernels take float32, float16 or bfloat16");
  }
}

LaunchStatus cross_modal_combine_backward(DType dtype, const CombineParams& params, void* workspace,
                                          cudaStream_t stream) {
  Args A;
  LaunchStatus st = make_args(params, true, A);
  if (!st.ok()) return st;
  if (kNumMod * A.batch > INT_MAX) return invalid("cross_modal combine: batch too large");
  A.partial = static_cast<float*>(workspace);
  A.dc = A.partial + partial_floats(A);
  switch (dtype) {
    case DType::F32: return backward_typed<float>(A, stream);
    case DType::F16: return backward_typed<__half>(A, stream);
    case DType::BF16: return backward_typed<__nv_bfloat16>(A, stream);
    default: return invalid("cross_modal combine: CUDA kernels take float32, float16 or bfloat16");
  }
}

}  // namespace maven_fast::cuda
