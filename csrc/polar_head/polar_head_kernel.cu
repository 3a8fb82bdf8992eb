// CUDA polar head: one kernel launch for the forward, one for the backward.
// Formulas: polar_head_math.h.
//
// Layout: one warp per row (grid-stride over rows); lanes split the feature
// dimension with 16-byte vector loads when alignment allows. The weights are
// staged in shared memory in the accumulation type.
// Reductions (loss; dW and db in the backward) are deterministic: every block
// writes its partial to the workspace, and the last block to finish (a
// threadfence + atomic ticket) sums the partials in block order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "polar_head/polar_head_cuda.h"
#include "polar_head/polar_head_math.h"

namespace maven_fast::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kForwardWarps = 8;
constexpr int kBackwardWarps = 4;

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename T> __device__ __forceinline__ T from_acc(double v) { return v; }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Ticket: returns true in every thread of the block that finishes last.
__device__ bool last_block_done(unsigned int* counter) {
  __shared__ bool is_last;
  __threadfence();  // make this block's partials visible before taking a ticket
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  return is_last;
}

// Stages W (and b) in shared memory as acc_t: w_s[0..d) = W_0, [d..2d) = W_1.
template <typename T, typename acc_t>
__device__ void stage_weights(const T* w, int64_t d, acc_t* w_s) {
  for (int64_t k = threadIdx.x; k < 2 * d; k += blockDim.x) w_s[k] = to_acc(w[k]);
  __syncthreads();
}

// Both dot products of row x with W, reduced across the warp (all lanes get them).
template <typename T, int VEC, typename acc_t>
__device__ __forceinline__ void row_dot2(const T* x, const acc_t* w_s, int64_t d, int lane,
                                         acc_t& r0, acc_t& r1) {
  r0 = 0;
  r1 = 0;
  for (int64_t k = lane * VEC; k < d; k += kWarp * VEC) {
    const auto p = *reinterpret_cast<const Pack<T, VEC>*>(x + k);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t xv = to_acc(p.v[j]);
      r0 += xv * w_s[k + j];
      r1 += xv * w_s[d + k + j];
    }
  }
  r0 = warp_sum(r0);
  r1 = warp_sum(r1);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kForwardWarps * kWarp)
    polar_head_forward_kernel(PolarHeadForwardArgs a) {
  using acc_t = typename Acc<T>::type;
  extern __shared__ unsigned char smem_raw[];
  acc_t* w_s = reinterpret_cast<acc_t*>(smem_raw);
  __shared__ acc_t warp_sse[kForwardWarps], warp_cnt[kForwardWarps];
  const T* x = static_cast<const T*>(a.x);
  stage_weights(static_cast<const T*>(a.weight), a.d, w_s);
  const acc_t b0 = to_acc(static_cast<const T*>(a.bias)[0]);
  const acc_t b1 = to_acc(static_cast<const T*>(a.bias)[1]);
  const acc_t* tgt = static_cast<const acc_t*>(a.target);
  T* va = static_cast<T*>(a.valence_arousal);
  T* ti = static_cast<T*>(a.theta_intensity);

  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  acc_t sse = 0, cnt = 0;
  for (int64_t i = int64_t(blockIdx.x) * kForwardWarps + warp; i < a.n;
       i += int64_t(gridDim.x) * kForwardWarps) {
    acc_t r0, r1;
    row_dot2<T, VEC>(x + i * a.ldx, w_s, a.d, lane, r0, r1);
    if (lane == 0) {
      const auto p = polar::forward<acc_t>(r0 + b0, r1 + b1, a.bounded);
      const T v = from_acc<T>(p.valence), ar = from_acc<T>(p.arousal);
      va[2 * i] = v;
      va[2 * i + 1] = ar;
      ti[2 * i] = from_acc<T>(p.theta);
      ti[2 * i + 1] = from_acc<T>(p.intensity);
      if (tgt && (!a.mask || a.mask[i])) {
        const acc_t ev = to_acc(v) - tgt[2 * i], ea = to_acc(ar) - tgt[2 * i + 1];
        sse += ev * ev + ea * ea;
        cnt += 1;
      }
    }
  }
  acc_t* loss = static_cast<acc_t*>(a.loss);
  acc_t* n_valid = static_cast<acc_t*>(a.n_valid);
  if (!tgt) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *loss = *n_valid = 0;
    return;
  }
  if (lane == 0) {
    warp_sse[warp] = sse;
    warp_cnt[warp] = cnt;
  }
  __syncthreads();
  acc_t* partial = static_cast<acc_t*>(a.workspace);  // [grid][2]
  if (threadIdx.x == 0) {
    acc_t s = 0, c = 0;
    for (int w = 0; w < kForwardWarps; ++w) {
      s += warp_sse[w];
      c += warp_cnt[w];
    }
    partial[2 * blockIdx.x] = s;
    partial[2 * blockIdx.x + 1] = c;
  }
  if (!last_block_done(a.counter)) return;
  if (threadIdx.x == 0) {
    acc_t s = 0, c = 0;
    for (unsigned int bi = 0; bi < gridDim.x; ++bi) {
      s += __ldcg(partial + 2 * bi);
      c += __ldcg(partial + 2 * bi + 1);
    }
    *loss = c > 0 ? s / (acc_t(2) * c) : acc_t(0);
    *n_valid = c;
    *a.counter = 0;
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kBackwardWarps * kWarp)
    polar_head_backward_kernel(PolarHeadBackwardArgs a) {
  using acc_t = typename Acc<T>::type;
  const int64_t d = a.d;
  extern __shared__ unsigned char smem_raw[];
  acc_t* w_s = reinterpret_cast<acc_t*>(smem_raw);  // [2d] weights
  acc_t* acc_s = w_s + 2 * d;                        // [warps][2d + 2] per-warp dW, db
  const int64_t stride = 2 * d + 2;
  for (int64_t k = threadIdx.x; k < kBackwardWarps * stride; k += blockDim.x) acc_s[k] = 0;
  stage_weights(static_cast<const T*>(a.weight), d, w_s);  // also syncs acc_s zeroing
  const acc_t b0 = to_acc(static_cast<const T*>(a.bias)[0]);
  const acc_t b1 = to_acc(static_cast<const T*>(a.bias)[1]);
  const T* x = static_cast<const T*>(a.x);
  const T* gva = static_cast<const T*>(a.grad_va);
  const T* gti = static_cast<const T*>(a.grad_ti);
  const acc_t* tgt = static_cast<const acc_t*>(a.target);
  acc_t loss_scale = 0;
  if (tgt && a.grad_loss) {
    const acc_t nv = *static_cast<const acc_t*>(a.n_valid);
    if (nv > 0) loss_scale = *static_cast<const acc_t*>(a.grad_loss) / nv;
  }
  T* gx = static_cast<T*>(a.grad_x);

  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  acc_t* my = acc_s + warp * stride;
  for (int64_t i = int64_t(blockIdx.x) * kBackwardWarps + warp; i < a.n;
       i += int64_t(gridDim.x) * kBackwardWarps) {
    const T* xi = x + i * a.ldx;
    acc_t r0, r1;
    row_dot2<T, VEC>(xi, w_s, d, lane, r0, r1);
    r0 += b0;
    r1 += b1;
    // Every lane evaluates the (cheap) scalar chain, so no broadcast is needed.
    const auto p = polar::forward<acc_t>(r0, r1, a.bounded);
    acc_t gv = gva ? to_acc(gva[2 * i]) : acc_t(0);
    acc_t ga = gva ? to_acc(gva[2 * i + 1]) : acc_t(0);
    const acc_t gth = gti ? to_acc(gti[2 * i]) : acc_t(0);
    const acc_t gin = gti ? to_acc(gti[2 * i + 1]) : acc_t(0);
    if (loss_scale != acc_t(0) && (!a.mask || a.mask[i])) {
      gv += loss_scale * (to_acc(from_acc<T>(p.valence)) - tgt[2 * i]);
      ga += loss_scale * (to_acc(from_acc<T>(p.arousal)) - tgt[2 * i + 1]);
    }
    acc_t d0, d1;
    polar::backward<acc_t>(r0, r1, a.bounded, p, gv, ga, gth, gin, d0, d1);
    for (int64_t k = lane * VEC; k < d; k += kWarp * VEC) {
      const auto xp = *reinterpret_cast<const Pack<T, VEC>*>(xi + k);
      Pack<T, VEC> out;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc_t xv = to_acc(xp.v[j]);
        out.v[j] = from_acc<T>(d0 * w_s[k + j] + d1 * w_s[d + k + j]);
        my[k + j] += d0 * xv;  // each lane owns its k: no atomics
        my[d + k + j] += d1 * xv;
      }
      *reinterpret_cast<Pack<T, VEC>*>(gx + i * d + k) = out;
    }
    if (lane == 0) {
      my[2 * d] += d0;
      my[2 * d + 1] += d1;
    }
  }
  __syncthreads();
  acc_t* partial = static_cast<acc_t*>(a.workspace);  // [grid][2d + 2]
  for (int64_t k = threadIdx.x; k < stride; k += blockDim.x) {
    acc_t s = 0;
#pragma unroll
    for (int w = 0; w < kBackwardWarps; ++w) s += acc_s[w * stride + k];
    partial[int64_t(blockIdx.x) * stride + k] = s;
  }
  if (!last_block_done(a.counter)) return;
  T* gw = static_cast<T*>(a.grad_weight);
  T* gb = static_cast<T*>(a.grad_bias);
  for (int64_t k = threadIdx.x; k < stride; k += blockDim.x) {
    acc_t s = 0;
    for (unsigned int bi = 0; bi < gridDim.x; ++bi) s += __ldcg(partial + int64_t(bi) * stride + k);
    if (k < 2 * d) gw[k] = from_acc<T>(s);
    else gb[k - 2 * d] = from_acc<T>(s);
  }
  if (threadIdx.x == 0) *a.counter = 0;
}

template <typename T>
constexpr int kVec = 16 / sizeof(T);

template <typename T>
bool vector_ok(const void* x, int64_t ldx, int64_t d, const void* out) {
  constexpr int v = kVec<T>;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return d % v == 0 && ldx % v == 0 && aligned(x) && (out == nullptr || aligned(out));
}

template <typename Args>
cudaError_t launch(void (*kernel)(Args), int grid, int threads, size_t smem, cudaStream_t stream,
                   const Args& args) {
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return e;
  }
  kernel<<<grid, threads, smem, stream>>>(args);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_typed(const PolarHeadForwardArgs& a, int grid, cudaStream_t stream) {
  using acc_t = typename Acc<T>::type;
  const size_t smem = 2 * a.d * sizeof(acc_t);
  const int threads = kForwardWarps * kWarp;
  if (vector_ok<T>(a.x, a.ldx, a.d, nullptr))
    return launch(polar_head_forward_kernel<T, kVec<T>>, grid, threads, smem, stream, a);
  return launch(polar_head_forward_kernel<T, 1>, grid, threads, smem, stream, a);
}

template <typename T>
cudaError_t backward_typed(const PolarHeadBackwardArgs& a, int grid, cudaStream_t stream) {
  using acc_t = typename Acc<T>::type;
  const size_t smem = (2 * a.d + kBackwardWarps * (2 * a.d + 2)) * sizeof(acc_t);
  const int threads = kBackwardWarps * kWarp;
  if (vector_ok<T>(a.x, a.ldx, a.d, a.grad_x))
    return launch(polar_head_backward_kernel<T, kVec<T>>, grid, threads, smem, stream, a);
  return launch(polar_head_backward_kernel<T, 1>, grid, threads, smem, stream, a);
}

size_t acc_size(DType t) { return t == DType::F64 ? sizeof(double) : sizeof(float); }

}  // namespace

int polar_head_grid(int64_t n, int sm_count, bool backward) {
  const int64_t rows_per_block = backward ? kBackwardWarps : kForwardWarps;
  const int64_t want = (n + rows_per_block - 1) / rows_per_block;
  const int64_t cap = int64_t(sm_count) * (backward ? 4 : 8);
  return int(std::max<int64_t>(1, std::min(want, cap)));
}

size_t polar_head_workspace_bytes(int grid, int64_t d, DType dtype, bool backward) {
  return size_t(grid) * size_t(backward ? 2 * d + 2 : 2) * acc_size(dtype);
}

cudaError_t polar_head_forward(DType dtype, const PolarHeadForwardArgs& a, int grid,
                               cudaStream_t stream) {
  switch (dtype) {
    case DType::F32: return forward_typed<float>(a, grid, stream);
    case DType::F64: return forward_typed<double>(a, grid, stream);
    case DType::F16: return forward_typed<__half>(a, grid, stream);
    case DType::BF16: return forward_typed<__nv_bfloat16>(a, grid, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t polar_head_backward(DType dtype, const PolarHeadBackwardArgs& a, int grid,
                                cudaStream_t stream) {
  switch (dtype) {
    case DType::F32: return backward_typed<float>(a, grid, stream);
    case DType::F64: return backward_typed<double>(a, grid, stream);
    case DType::F16: return backward_typed<__half>(a, grid, stream);
    case DType::BF16: return backward_typed<__nv_bfloat16>(a, grid, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace maven_fast::cuda
