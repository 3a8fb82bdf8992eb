// Test kernels of the warp-level primitives (csrc/common/warp_mma.cuh) for the
// CPU emulator, written as CUDA (one warp per launch): the emulated mma.sync,
// ldmatrix and cp.async against torch (tests/test_cuda_emulation_primitives.py),
// and launches that break the warp-synchronous rules on purpose.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/mma_layout.h"
#include "common/warp_mma.cuh"

namespace maven_fast::emu_test {
namespace mm = maven_fast::cuda::mma;
using maven_fast::mma::Coord;

template <typename T>
__device__ uint32_t pack2(T lo, T hi) {
  uint16_t a, b;
  memcpy(&a, &lo, 2);
  memcpy(&b, &hi, 2);
  return static_cast<uint32_t>(a) | static_cast<uint32_t>(b) << 16;
}

// mode 0: fragments gathered from global memory by the layout of mma_layout.h;
// 1: A by ldmatrix.x4, B by ldmatrix.x2 from B^T (rows = n);
// 2: A by ldmatrix.x4, B by ldmatrix.x2.trans from B (rows = k);
// 3: A by four ldmatrix.x1, B by two ldmatrix.x1.trans.
// a: [16][16] row-major, b: [16][8] row-major (k, n), c, d: [16][8] fp32.
template <typename T>
__global__ void mma_tile_kernel(const T* a, const T* b, const float* c, float* d, int mode) {
  extern __shared__ unsigned char smem_raw[];
  T* sa = reinterpret_cast<T*>(smem_raw);   // [16][16]
  T* sb = sa + 256;                         // [16][8]  (k, n)
  T* sbt = sb + 128;                        // [8][16]  (n, k)
  const int lane = threadIdx.x;
  for (int e = lane; e < 256; e += 32) sa[e] = a[e];
  for (int e = lane; e < 128; e += 32) {
    sb[e] = b[e];
    sbt[(e % 8) * 16 + e / 8] = b[e];
  }
  __syncthreads();
  uint32_t af[4], bf[2];
  if (mode == 0) {
    for (int r = 0; r < 4; ++r) {
      const Coord lo = maven_fast::mma::a_coord(lane, 2 * r), hi = maven_fast::mma::a_coord(lane, 2 * r + 1);
      af[r] = pack2(a[lo.row * 16 + lo.col], a[hi.row * 16 + hi.col]);
    }
    for (int r = 0; r < 2; ++r) {
      const Coord lo = maven_fast::mma::b_coord(lane, 2 * r), hi = maven_fast::mma::b_coord(lane, 2 * r + 1);
      bf[r] = pack2(b[lo.row * 8 + lo.col], b[hi.row * 8 + hi.col]);
    }
  } else if (mode == 3) {
    // matrix m of A: rows 8 (m % 2).., cols 8 (m / 2)..; lanes 0-7 give its rows.
    for (int m = 0; m < 4; ++m) mm::ldmatrix_x1(af[m], sa + ((lane % 8) + 8 * (m % 2)) * 16 + 8 * (m / 2));
    for (int m = 0; m < 2; ++m) mm::ldmatrix_x1_trans(bf[m], sb + ((lane % 8) + 8 * m) * 8);
  } else {
    const int m = lane / 8;
    mm::ldmatrix_x4(af, sa + ((lane % 8) + 8 * (m % 2)) * 16 + 8 * (m / 2));
    if (mode == 1) {
      mm::ldmatrix_x2(bf, sbt + (lane % 8) * 16 + 8 * ((lane / 8) % 2));
    } else {
      mm::ldmatrix_x2_trans(bf, sb + ((lane % 8) + 8 * ((lane / 8) % 2)) * 8);
    }
  }
  float acc[4];
  for (int v = 0; v < 4; ++v) {
    const Coord o = maven_fast::mma::c_coord(lane, v);
    acc[v] = c[o.row * 8 + o.col];
  }
  mm::mma_16x8x16<T>(acc, af, bf);
  for (int v = 0; v < 4; ++v) {
    const Coord o = maven_fast::mma::c_coord(lane, v);
    d[o.row * 8 + o.col] = acc[v];
  }
}

// Copies src [rows][8] (16-byte rows) to shared memory with cp.async in two
// commit groups (rows < split; the rest, rows >= valid zero-filled without
// reading), then records what shared memory holds after wait<1> (only the first
// group must have landed) and after wait<0>.
__global__ void cp_async_kernel(const uint16_t* src, int rows, int split, int valid, uint16_t* after1,
                                uint16_t* after0) {
  extern __shared__ unsigned char smem_raw[];
  uint16_t* s = reinterpret_cast<uint16_t*>(smem_raw);
  const int lane = threadIdx.x;
  for (int r = lane; r < split; r += 32) mm::cp_async_16(s + 8 * r, src + 8 * r, r < valid);
  mm::cp_async_commit();
  for (int r = split + lane; r < rows; r += 32) mm::cp_async_16(s + 8 * r, src + 8 * r, r < valid);
  mm::cp_async_commit();
  mm::cp_async_wait<1>();
  __syncthreads();
  for (int e = lane; e < 8 * rows; e += 32) after1[e] = s[e];
  __syncthreads();
  mm::cp_async_wait<0>();
  __syncthreads();
  for (int e = lane; e < 8 * rows; e += 32) after0[e] = s[e];
}

// Breaks a rule: 0 lane 31 exits before an mma.sync; 1 a shuffle with a partial
// mask; 2 an ldmatrix row outside shared memory.
__global__ void broken_kernel(const __nv_bfloat16* g, float* out, int what) {
  extern __shared__ unsigned char smem_raw[];
  const int lane = threadIdx.x;
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float acc[4] = {0, 0, 0, 0};
  if (what == 0) {
    if (lane == 31) return;
    mm::mma_16x8x16<__nv_bfloat16>(acc, a, b);
  } else if (what == 1) {
    acc[0] = __shfl_xor_sync(0x0000ffffu, 1.f, 1);
  } else {
    mm::ldmatrix_x4(a, lane == 5 ? static_cast<const void*>(g) : smem_raw + 16 * lane);
  }
  out[lane] = acc[0] + static_cast<float>(a[0]);
}

}  // namespace

namespace maven_fast::emu_test {

template <typename T>
cudaError_t mma_tile(const T* a, const T* b, const float* c, float* d, int mode) {
  mma_tile_kernel<T><<<1, 32, (256 + 128 + 128) * sizeof(T), nullptr>>>(a, b, c, d, mode);
  return cudaGetLastError();
}
template cudaError_t mma_tile<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const float*, float*, int);
template cudaError_t mma_tile<__half>(const __half*, const __half*, const float*, float*, int);

cudaError_t cp_async(const uint16_t* src, int rows, int split, int valid, uint16_t* after1, uint16_t* after0) {
  cp_async_kernel<<<1, 32, 16 * rows, nullptr>>>(src, rows, split, valid, after1, after0);
  return cudaGetLastError();
}

cudaError_t broken(const __nv_bfloat16* g, float* out, int what) {
  broken_kernel<<<1, 32, 1024, nullptr>>>(g, out, what);
  return cudaGetLastError();
}

}  // namespace maven_fast::emu_test
