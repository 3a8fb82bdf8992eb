// Shared-memory tiles of 16-bit elements for the tensor-core kernels, and the
// mma.sync fragments read from them (layouts: mma_layout.h).
//
// A tile holds rows of W elements (W a multiple of 64) as 16-byte chunks; chunk
// c of row r is stored at chunk (c & ~7) | ((c ^ r) & 7) of that row. The 8 row
// addresses of one ldmatrix matrix (one chunk column, 8 consecutive rows) then
// fall in 8 different 16-byte bank groups: no bank conflicts, and cp.async
// writes whole chunks.
//
// Fragment loaders (one warp, every lane calls them):
//   frag_a    A (16 x 16) from a [m][k] tile       rows m0.., columns k0..
//   frag_a_t  A (16 x 16) from a [k][m] tile       (the tile holds A^T)
//   frag_b2   B (16 x 8) of the two n8 blocks n0.., n0 + 8.. from a [n][k] tile
//   frag_b1   B of the one n8 block n0.. from a [n][k] tile
//   frag_b2_t the same from a [k][n] tile
// and c_to_a: the A fragment of a 16 x 16 product operand from the fp32
// accumulators (C fragments) of two adjacent n8 blocks, rounded to T: how a
// probability tile stays in registers between S = Q K^T and O += P V.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/warp_mma.cuh"

namespace maven_fast::cuda::tiles {
namespace mm = maven_fast::cuda::mma;

template <int W>
__device__ __forceinline__ int swz(int r, int c) {
  static_assert(W % 64 == 0, "tile rows of at least 8 chunks");
  const int chunk = c >> 3;
  return r * W + (((chunk ^ r) & 7) | (chunk & ~7)) * 8 + (c & 7);
}

// Copies rows [0, rows) x columns [0, W) of a global row block (row stride ld
// elements, 16-byte aligned rows) into a tile, asynchronously; rows >=
// valid_rows and columns >= valid_cols (a multiple of 8) are zero-filled and
// never read. Every thread of the CTA (nthreads) calls it; committing the group
// is the caller's.
template <int W, typename T>
__device__ __forceinline__ void load_tile_async(T* tile, const T* g, int64_t ld, int rows, int valid_rows,
                                                int valid_cols, int nthreads) {
  constexpr int kChunks = W / 8;
  for (int e = threadIdx.x; e < rows * kChunks; e += nthreads) {
    const int r = e / kChunks, c = (e % kChunks) * 8;
    const bool full = r < valid_rows && c < valid_cols;
    mm::cp_async_16(tile + swz<W>(r, c), full ? g + r * ld + c : g, full);
  }
}

template <int W, typename T>
__device__ __forceinline__ void frag_a(uint32_t (&a)[4], const T* tile, int m0, int k0) {
  const int lane = threadIdx.x & 31, mat = lane >> 3;
  mm::ldmatrix_x4(a, tile + swz<W>(m0 + 8 * (mat & 1) + (lane & 7), k0 + 8 * (mat >> 1)));
}

template <int W, typename T>
__device__ __forceinline__ void frag_a_t(uint32_t (&a)[4], const T* tile, int m0, int k0) {
  const int lane = threadIdx.x & 31, mat = lane >> 3;
  mm::ldmatrix_x4_trans(a, tile + swz<W>(k0 + 8 * (mat >> 1) + (lane & 7), m0 + 8 * (mat & 1)));
}

// b[0], b[1]: the B fragment of block n0; b[2], b[3]: of block n0 + 8.
template <int W, typename T>
__device__ __forceinline__ void frag_b2(uint32_t (&b)[4], const T* tile, int n0, int k0) {
  const int lane = threadIdx.x & 31, mat = lane >> 3;
  mm::ldmatrix_x4(b, tile + swz<W>(n0 + 8 * (mat >> 1) + (lane & 7), k0 + 8 * (mat & 1)));
}

// The B fragment of the one n8 block n0.. from a [n][k] tile (lanes 0-15 give the rows).
template <int W, typename T>
__device__ __forceinline__ void frag_b1(uint32_t (&b)[2], const T* tile, int n0, int k0) {
  const int lane = threadIdx.x & 31, mat = (lane >> 3) & 1;
  mm::ldmatrix_x2(b, tile + swz<W>(n0 + (lane & 7), k0 + 8 * mat));
}

template <int W, typename T>
__device__ __forceinline__ void frag_b2_t(uint32_t (&b)[4], const T* tile, int n0, int k0) {
  const int lane = threadIdx.x & 31, mat = lane >> 3;
  mm::ldmatrix_x4_trans(b, tile + swz<W>(k0 + 8 * (mat & 1) + (lane & 7), n0 + 8 * (mat >> 1)));
}

// D += A B for both n8 blocks of a frag_b2 / frag_b2_t load.
template <typename T>
__device__ __forceinline__ void mma_2blocks(float (&d0)[4], float (&d1)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[4]) {
  const uint32_t lo[2] = {b[0], b[1]}, hi[2] = {b[2], b[3]};
  mm::mma_16x8x16<T>(d0, a, lo);
  mm::mma_16x8x16<T>(d1, a, hi);
}

__device__ __forceinline__ uint16_t bits_of(float v, const __nv_bfloat16*) {
  const __nv_bfloat16 h = __float2bfloat16_rn(v);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
__device__ __forceinline__ uint16_t bits_of(float v, const __half*) {
  const __half h = __float2half_rn(v);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}

// Two values rounded to T in one register, `lo` in the low half (the lower column).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return static_cast<uint32_t>(bits_of(lo, static_cast<const T*>(nullptr))) |
         static_cast<uint32_t>(bits_of(hi, static_cast<const T*>(nullptr))) << 16;
}

template <typename T>
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack2<T>(c0[0], c0[1]);
  a[1] = pack2<T>(c0[2], c0[3]);
  a[2] = pack2<T>(c1[0], c1[1]);
  a[3] = pack2<T>(c1[2], c1[3]);
}

// Stores elements (r, c), (r, c + 1) of a tile (c even) as one 4-byte word.
template <int W, typename T>
__device__ __forceinline__ void store_pair(T* tile, int r, int c, float lo, float hi) {
  const uint32_t v = pack2<T>(lo, hi);
  std::memcpy(tile + swz<W>(r, c), &v, 4);
}

}  // namespace maven_fast::cuda::tiles
