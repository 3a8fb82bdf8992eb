// Compares the fragment layouts of csrc/common/mma_layout.h (used by the CUDA
// kernels and the CPU emulator) with CuTe's MMA traits, an independent source:
// for SM80_16x8x16_F32BF16BF16F32_TN and SM80_16x8x16_F32F16F16F32_TN, every
// (thread, value) of ALayout (M x K = 16 x 16), BLayout (N x K = 8 x 16) and
// CLayout (M x N = 16 x 8), which map it to a column-major index of the tile.
// Prints each mismatch and "checked N values, M mismatches"; exit status 1 on any.
#include <cute/atom/mma_traits_sm80.hpp>

#include <cstdio>

#include "common/mma_layout.h"

namespace mm = maven_fast::mma;

template <class Traits>
int check(const char* name, int& checked) {
  int bad = 0;
  const auto A = typename Traits::ALayout{};
  const auto B = typename Traits::BLayout{};
  const auto C = typename Traits::CLayout{};
  for (int t = 0; t < 32; ++t) {
    for (int v = 0; v < 8; ++v, ++checked) {
      const int idx = A(t, v);
      const mm::Coord c = mm::a_coord(t, v);
      if (c.row != idx % 16 || c.col != idx / 16) {
        std::printf("%s A: lane %d value %d: mma_layout (%d, %d), CuTe (%d, %d)\n", name, t, v, c.row, c.col,
                    idx % 16, idx / 16);
        ++bad;
      }
    }
    for (int v = 0; v < 4; ++v, ++checked) {
      const int idx = B(t, v);
      const mm::Coord c = mm::b_coord(t, v);  // (k, n)
      if (c.col != idx % 8 || c.row != idx / 8) {
        std::printf("%s B: lane %d value %d: mma_layout (k %d, n %d), CuTe (k %d, n %d)\n", name, t, v, c.row,
                    c.col, idx / 8, idx % 8);
        ++bad;
      }
    }
    for (int v = 0; v < 4; ++v, ++checked) {
      const int idx = C(t, v);
      const mm::Coord c = mm::c_coord(t, v);
      if (c.row != idx % 16 || c.col != idx / 16) {
        std::printf("%s C: lane %d value %d: mma_layout (%d, %d), CuTe (%d, %d)\n", name, t, v, c.row, c.col,
                    idx % 16, idx / 16);
        ++bad;
      }
    }
  }
  return bad;
}

int main() {
  int checked = 0;
  const int bad = check<cute::MMA_Traits<cute::SM80_16x8x16_F32BF16BF16F32_TN>>("bf16", checked) +
                  check<cute::MMA_Traits<cute::SM80_16x8x16_F32F16F16F32_TN>>("f16", checked);
  std::printf("checked %d values, %d mismatches\n", checked, bad);
  return bad ? 1 : 0;
}
