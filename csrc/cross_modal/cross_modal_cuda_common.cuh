// Device helpers shared by the cross-modal CUDA kernels (no torch headers):
// element conversions, lane-group reductions and the Philox dropout masks of
// cross_modal_math.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "cross_modal/cross_modal_descriptors.h"
#include "cross_modal/cross_modal_math.h"

namespace maven_fast::cuda::cm {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Sum / max over the aligned groups of G consecutive lanes (G a power of two
// <= 32). Every lane of the warp must call it (full-mask shuffles); every lane
// of a group gets the group's result.
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = 1; o < G; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <int G>
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
  for (int o = 1; o < G; o *= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Dropout with the Philox streams of cross_modal_math.h. As a kernel argument
// it holds the source of the seed and offset (rng); a kernel resolves it once
// at its start (resolved(): reads the source's device memory, if any) and
// passes the result to keep4/keep1.
struct Dropout {
  cross_modal::RngSource rng;
  uint32_t k0 = 0, k1 = 0, offset = 0, threshold = 0;  // k0, k1, offset: set by resolved()
  float inv_keep = 1.f;  // (float)(1 / (1 - p)), as the CPU kernels round it
  int on = 0;
};

inline Dropout make_dropout(const cross_modal::DropoutParams& d) {
  Dropout r;
  r.on = d.p > 0.0;
  r.rng = d.rng;
  if (r.on) {
    r.threshold = cross_modal::dropout_threshold(d.p);
    r.inv_keep = static_cast<float>(1.0 / (1.0 - d.p));
  }
  return r;
}

__device__ __forceinline__ Dropout resolved(const Dropout& d) {
  Dropout r = d;
  if (r.on) {
    const cross_modal::Philox ph = cross_modal::philox_of(d.rng);
    r.k0 = ph.k0;
    r.k1 = ph.k1;
    r.offset = ph.offset;
  }
  return r;
}

// Multipliers (inv_keep or 0) of columns j4 .. j4 + 3 of row i, batch item b,
// in `stream`; j4 must be a multiple of 4 (one Philox call: counter
// (j4 / 4, i, stream, b + offset), word u for column j4 + u).
__device__ __forceinline__ void keep4(const Dropout& d, uint32_t stream, int64_t b, int64_t i,
                                      int64_t j4, float z[4]) {
  uint32_t w[4];
  const cross_modal::Philox ph{d.k0, d.k1, d.offset};
  ph(static_cast<uint32_t>(j4 >> 2), static_cast<uint32_t>(i), stream,
     static_cast<uint32_t>(b) + d.offset, w);
#pragma unroll
  for (int u = 0; u < 4; ++u) z[u] = w[u] >= d.threshold ? d.inv_keep : 0.f;
}

// Multiplier of word 0 only (key column 0: the key-length-1 item terms).
__device__ __forceinline__ float keep1(const Dropout& d, uint32_t stream, int64_t b, int64_t i) {
  uint32_t w[4];
  const cross_modal::Philox ph{d.k0, d.k1, d.offset};
  ph(0u, static_cast<uint32_t>(i), stream, static_cast<uint32_t>(b) + d.offset, w);
  return w[0] >= d.threshold ? d.inv_keep : 0.f;
}

// 0 <= len <= tk whatever the tensor holds: memory safety never depends on
// the lengths (the host does not read them; see checked_len).
__device__ __forceinline__ int clamp_len(int64_t len, int64_t tk) {
  return static_cast<int>(len < 0 ? 0 : (len > tk ? tk : len));
}

// A device-side error, as PyTorch's device asserts: the kernel prints what is
// wrong and stops (the launch fails; CUDA reports it at the next sync and
// the context cannot be used afterwards).
#define MF_DEVICE_FAIL(...)  \
  do {                       \
    printf(__VA_ARGS__);     \
    __trap();                \
  } while (0)

// The forward kernels read every key length: one out of [0, tk] is an error
// (the CPU op raises it on the host); the clamped length otherwise.
// modality: of the keys (0 video -> len_v, 1 audio -> len_a, 2 text -> len_t).
__device__ __forceinline__ int checked_len(int64_t len, int64_t tk, int modality, int64_t b) {
  if (len < 0 || len > tk)
    MF_DEVICE_FAIL("maven_fast cross_modal_block: len_%c[%lld] = %lld is outside [0, T] = [0, %lld]\n",
                   "vat"[modality], static_cast<long long>(b), static_cast<long long>(len),
                   static_cast<long long>(tk));
  return clamp_len(len, tk);
}

}  // namespace maven_fast::cuda::cm
