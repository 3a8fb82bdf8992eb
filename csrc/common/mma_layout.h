// Fragment layouts of the warp-level tensor-core instruction
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 (sm_80 and
// sm_90), from the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating
// point type"), and of ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].b16.
// Plain C++ (host and device): the kernels use it to know which matrix element
// each register holds, the CPU emulator (tests/cuda_emulation) to emulate the
// instructions, and tests/test_cuda_emulation_primitives.py checks it against
// CuTe's MMA_Traits<SM80_16x8x16_F32BF16BF16F32_TN> (an independent source).
//
// With lane l of the warp, g = l / 4 (the "group") and t = l % 4:
//   A (16 x 16, row-major, 8 half values in 4 registers):
//     value v = 2 r + h of register r:  row = g + 8 (r % 2),  col = 2 t + h + 8 (r / 2)
//   B (16 x 8, "col": K x N, 4 values in 2 registers):
//     value v = 2 r + h:                 k = 2 t + h + 8 r,  n = g
//   C, D (16 x 8, fp32, 4 values):
//     value v:                           row = g + 8 (v / 2), col = 2 t + v % 2
// ldmatrix (8 x 8 matrices of 16-bit elements, row addresses from lanes
// 8 m .. 8 m + 7 for matrix m): register m of lane l holds, of matrix m,
//   elements (row l / 4, cols 2 (l % 4), 2 (l % 4) + 1)          (low half first)
//   with .trans: elements (rows 2 (l % 4), 2 (l % 4) + 1, col l / 4)
#pragma once

#if defined(__CUDACC__)
#define MF_MMA_HD __host__ __device__ __forceinline__
#else
#define MF_MMA_HD inline
#endif

namespace maven_fast::mma {

struct Coord {
  int row, col;
};

// A fragment value v (0..7) of lane l: (row, col) in the 16 x 16 tile.
MF_MMA_HD Coord a_coord(int lane, int v) {
  const int r = v / 2, h = v % 2;
  return {lane / 4 + 8 * (r % 2), 2 * (lane % 4) + h + 8 * (r / 2)};
}

// B fragment value v (0..3) of lane l: (k, n) in the 16 x 8 tile.
MF_MMA_HD Coord b_coord(int lane, int v) {
  const int r = v / 2, h = v % 2;
  return {2 * (lane % 4) + h + 8 * r, lane / 4};
}

// C/D fragment value v (0..3) of lane l: (row, col) in the 16 x 8 tile.
MF_MMA_HD Coord c_coord(int lane, int v) { return {lane / 4 + 8 * (v / 2), 2 * (lane % 4) + v % 2}; }

// ldmatrix: element h (0, 1) of lane l's register for one 8 x 8 matrix.
MF_MMA_HD Coord ldmatrix_coord(int lane, int h, bool trans) {
  return trans ? Coord{2 * (lane % 4) + h, lane / 4} : Coord{lane / 4, 2 * (lane % 4) + h};
}

}  // namespace maven_fast::mma
