// The dropout keep mask on the CPU (dropout.h): Philox-4x32-10 on kLanes
// counters at once, eight per register on AVX2 / AVX512 builds (32 x 32 ->
// 64-bit multiplies as vpmuludq; GCC 12 did not vectorise Philox lane by lane:
// 2.56 -> 1.47 ms for 0.5 M elements), elsewhere Philox::operator()
// (common/philox.h) lane by lane; the same words either way. Blocks
// of four elements are independent, so threads split them freely and the
// mask depends on the seed alone. Compiled once per CPU capability.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/philox.h"
#include "dropout/dropout.h"

namespace maven_fast {
namespace MAVEN_FAST_CPU_NS {
namespace {

constexpr int64_t kLanes = 16;

#if defined(__AVX2__)
// (lo, hi) 32-bit halves of the eight products m * c (lane by lane).
inline void mulhilo8(__m256i m, __m256i c, __m256i& lo, __m256i& hi) {
  const __m256i even = _mm256_mul_epu32(m, c);                         // lanes 0, 2, 4, 6 as 64 bits
  const __m256i odd = _mm256_mul_epu32(m, _mm256_srli_epi64(c, 32));  // lanes 1, 3, 5, 7
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// The four words of blocks first, ..., first + kLanes - 1, eight lanes per AVX2 register.
void philox_lanes(const Philox& g, uint64_t first, uint32_t out[4][kLanes]) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int64_t half = 0; half < kLanes; half += 8) {
    alignas(32) uint32_t lo_block[8], hi_block[8];
    for (int l = 0; l < 8; ++l) {
      const uint64_t block = first + static_cast<uint64_t>(half + l);
      lo_block[l] = static_cast<uint32_t>(block);
      hi_block[l] = static_cast<uint32_t>(block >> 32);
    }
    __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo_block));
    __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi_block));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t key0 = g.k0, key1 = g.k1;
    for (int r = 0; r < 10; ++r) {
      __m256i lo0, hi0, lo1, hi1;
      mulhilo8(m0, c0, lo0, hi0);
      mulhilo8(m1, c2, lo1, hi1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(key0)));
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(key1)));
      c1 = lo1;
      c3 = lo0;
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[0] + half), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[1] + half), c1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[2] + half), c2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[3] + half), c3);
  }
}
#else
// The four words of blocks first, first + 1, ..., first + kLanes - 1.
void philox_lanes(const Philox& g, uint64_t first, uint32_t out[4][kLanes]) {
  for (int64_t l = 0; l < kLanes; ++l) {
    const uint64_t block = first + static_cast<uint64_t>(l);
    uint32_t w[4];
    g(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u, w);
    for (int t = 0; t < 4; ++t) out[t][l] = w[t];
  }
}
#endif

template <typename T>
void fill_mask(T* mask, int64_t n, const Philox& g, uint32_t threshold, T scale) {
  const int64_t groups = (n + 4 * kLanes - 1) / (4 * kLanes);  // kLanes blocks of four elements each
  at::parallel_for(0, groups, 64, [&](int64_t g0, int64_t g1) {
    uint32_t w[4][kLanes];
    for (int64_t group = g0; group < g1; ++group) {
      const int64_t first = group * kLanes;
      philox_lanes(g, static_cast<uint64_t>(first), w);
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t i0 = 4 * (first + l);
        for (int64_t t = 0; t < 4 && i0 + t < n; ++t) mask[i0 + t] = w[t][l] >= threshold ? scale : T(0);
      }
    }
  });
}

}  // namespace

void dropout_mask_cpu_kernel(at::Tensor& mask, uint64_t seed, uint32_t threshold, double scale) {
  const Philox g = philox_of(seed, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mask.scalar_type(), "dropout_mask_cpu", [&] {
    fill_mask<scalar_t>(mask.data_ptr<scalar_t>(), mask.numel(), g, threshold, static_cast<scalar_t>(scale));
  });
}

}  // namespace MAVEN_FAST_CPU_NS
}  // namespace maven_fast
