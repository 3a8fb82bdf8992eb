// CPU kernel of the bf16 GEMMs (bf16_gemm.h), compiled once per CPU capability;
// only the AVX512 build computes (with AVX512-BF16, checked by the host).
//
//   C [m, n] (=|+=) alpha * sum_e A2(i, e) . B2[e, j] (+ bias[j]),   e < kw = ceil(k / 2)
//
// A2 / B2 hold bf16 pairs along k in 32-bit words (micro_gemm_bf16.h). One call:
//   1. only if some A's rows are not already pairs (A^T, odd k or leading
//      dimension): A packed into words [m][kw] (rows) or tile by tile (A^T),
//      one parallel region;
//   2. the products in one parallel region (gemm_schedule.h): units of a 64-column
//      panel and 96 rows; a thread packs each panel of B it reaches,
//      panel[e * 64 + j] = B2[e, j0 + j] (L2-resident: 64 KB at k = 512), and
//      runs the 6-row x 64-column pair tiles of its row blocks against it.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/bf16_gemm.h"
#include "common/cpu_pool.h"
#include "common/gemm_schedule.h"
#include "common/micro_gemm_bf16.h"

namespace maven_fast {
namespace MAVEN_FAST_CPU_NS {

#if defined(CPU_CAPABILITY_AVX512)
namespace {

namespace mb = micro_bf16;
using BF16 = c10::BFloat16;

constexpr int64_t kPanel = mb::kNC;  // columns per B panel (one register tile's width)
constexpr int64_t kBlockRows = 16 * mb::kMR;
// Packed A^T: a tile's 6 words of one e in 8 (one 32-byte store each).
constexpr int64_t kTileStep = 8;

using gemm_schedule::ceil_div;

// One problem's operands as pair words.
struct Packed {
  // A2(i0 + i, e) = a[(i0 / 6) * a_tile + i * a_rs + e * a_es] for a tile's
  // first row i0 (a multiple of 6) and its rows i < 6.
  const uint32_t* a = nullptr;
  int64_t a_tile = 0, a_rs = 0, a_es = 0;
  uint32_t* a_buf = nullptr;    // where A is packed (null: read in place)
  int64_t kw = 0, blocks = 0;
};

bool rows_are_pairs(const Bf16Gemm& p) {
  const auto addr = reinterpret_cast<uintptr_t>(p.a);
  return !p.a_transposed && p.k % 2 == 0 && (p.m == 1 || p.lda % 2 == 0) && addr % 4 == 0;
}

// Words per tile of packed A^T: 8 per e, and 64 bytes more, so that the pack's
// stores (one per tile for each e) do not all fall on the same L1 sets (tiles
// 16 KB apart at k = 1024; without the 64 bytes the A^T products ran ~10%
// slower on the EPYC).
int64_t tile_words(int64_t kw) { return kTileStep * kw + 16; }

// Words of packed A (whole tiles of 6 rows for A^T), rounded up so that every
// problem's region starts on a 64-byte boundary.
int64_t packed_a_words(const Bf16Gemm& p, int64_t kw) {
  if (rows_are_pairs(p)) return 0;
  const int64_t words = p.a_transposed ? ceil_div(p.m, mb::kMR) * tile_words(kw) : p.m * kw;
  return ceil_div(words, 16) * 16;
}

// The panels of B's columns [j0, j0 + nc) (stage: room for nc x kw words).
MF_BF16_TARGET void pack_b_panel(const Bf16Gemm& p, int64_t kw, int64_t j0, int64_t nc, uint32_t* panel,
                                 std::vector<uint32_t>& stage) {
  if (!p.b_transposed) {
    mb::row_pairs_to_words(p.b + j0, p.k, nc, p.ldb, panel, kPanel);
    return;
  }
  // B(p, j) = W[j, p]: the words of W's rows, transposed.
  const BF16* w = p.b + j0 * p.ldb;
  const auto addr = reinterpret_cast<uintptr_t>(w);
  if (p.k % 2 == 0 && (nc == 1 || p.ldb % 2 == 0) && addr % 4 == 0) {
    micro::transpose32(reinterpret_cast<const uint32_t*>(w), nc, kw, p.ldb / 2, panel, kPanel);
    return;
  }
  stage.resize(nc * kw);
  mb::rows_to_words(w, nc, p.k, p.ldb, stage.data(), kw);
  micro::transpose32(stage.data(), nc, kw, kw, panel, kPanel);
}

// Packed A: words [m][kw] (A's rows, task r: rows [r * 96, r * 96 + 96)), or
// tile by tile for A^T, whose rows are columns of its source: [kw][8] words per
// 6-row tile, the rows' words of one e side by side, so that the tile's loads
// run through memory in order (task r: e in [r * 8, r * 8 + 8), all tiles, its
// 16 source rows read whole: tasks of 96 columns, reading 192 bytes of every
// source row, took twice as long on the EPYC).
constexpr int64_t kPackWords = 8;

int64_t a_pack_tasks(const Bf16Gemm& p, const Packed& q) {
  return p.a_transposed ? ceil_div(q.kw, kPackWords) : q.blocks;
}

MF_BF16_TARGET void pack_a(const Bf16Gemm& p, const Packed& q, int64_t r) {
  if (!p.a_transposed) {
    const int64_t i0 = r * kBlockRows;
    mb::rows_to_words(p.a + i0 * p.lda, std::min(kBlockRows, p.m - i0), p.k, p.lda, q.a_buf + i0 * q.kw, q.kw);
    return;
  }
  const int64_t e0 = r * kPackWords, e1 = std::min(q.kw, e0 + kPackWords);
  for (int64_t e = e0; e < e1; ++e) {
    const BF16* lo = p.a + 2 * e * p.lda;
    const BF16* hi = 2 * e + 1 < p.k ? lo + p.lda : nullptr;
    uint32_t* out = q.a_buf + e * kTileStep;
    for (int64_t c = 0; c < p.m; c += mb::kMR, out += q.a_tile) {
      const __mmask8 lanes = static_cast<__mmask8>((1u << std::min<int64_t>(mb::kMR, p.m - c)) - 1u);
      const __m128i l = _mm_maskz_loadu_epi16(lanes, lo + c);
      const __m128i h = hi ? _mm_maskz_loadu_epi16(lanes, hi + c) : _mm_setzero_si128();
      const __m256i pairs = _mm256_set_m128i(_mm_unpackhi_epi16(l, h), _mm_unpacklo_epi16(l, h));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), pairs);
    }
  }
}

using gemm_schedule::Unit;

// The unit's 6-row x 64-column pair tiles down its rows, against its panel.
MF_BF16_TARGET void run_unit(const Bf16Gemm& p, const Packed& q, const Unit& u, const uint32_t* panel) {
  const int64_t i0 = u.block * kBlockRows, rows = std::min(kBlockRows, p.m - i0);
  const int64_t j0 = u.panel * kPanel, nc = std::min(kPanel, p.n - j0);
  micro::with_count<1, mb::kMaxNV>(ceil_div(nc, 16), [&]<int NV>() {
    micro::for_row_tiles<mb::kMR>(rows, [&]<int R>(int64_t i) {
      mb::TileOut out;
      out.c_bf16 = p.c + (i0 + i) * p.ldc + j0;
      out.ldc = p.ldc;
      out.bias = p.bias ? p.bias + j0 : nullptr;
      out.accumulate = p.accumulate;
      mb::pairs_tile<R, NV>(q.kw, p.alpha, q.a + (i0 + i) / mb::kMR * q.a_tile, q.a_rs, q.a_es, panel, kPanel, out,
                            nc);
    });
  });
}

}  // namespace

MF_BF16_TARGET void bf16_gemm_cpu_kernel(const std::vector<Bf16Gemm>& problems) {
  std::vector<Packed> packed(problems.size());
  int64_t a_words = 0;
  for (size_t i = 0; i < problems.size(); ++i) {
    const Bf16Gemm& p = problems[i];
    Packed& q = packed[i];
    q.kw = ceil_div(p.k, 2);
    q.blocks = ceil_div(p.m, kBlockRows);
    a_words += packed_a_words(p, q.kw);
  }

  // 1. The A operands that are not pairs already.
  at::Tensor a_buffer;
  std::vector<std::pair<int64_t, int64_t>> a_tasks;  // (problem, task of pack_a)
  if (a_words > 0) {
    a_buffer = cpu_pool_scratch(a_words, at::TensorOptions().dtype(at::kInt));
  }
  uint32_t* next = a_words > 0 ? reinterpret_cast<uint32_t*>(a_buffer.data_ptr<int32_t>()) : nullptr;
  for (size_t i = 0; i < problems.size(); ++i) {
    const Bf16Gemm& p = problems[i];
    Packed& q = packed[i];
    if (rows_are_pairs(p)) {
      q.a = reinterpret_cast<const uint32_t*>(p.a);
      q.a_rs = p.lda / 2;
      q.a_tile = mb::kMR * q.a_rs;
      q.a_es = 1;
      continue;
    }
    q.a = q.a_buf = next;
    next += packed_a_words(p, q.kw);
    q.a_rs = p.a_transposed ? 1 : q.kw;
    q.a_es = p.a_transposed ? kTileStep : 1;
    q.a_tile = p.a_transposed ? tile_words(q.kw) : mb::kMR * q.kw;
    for (int64_t r = 0; r < a_pack_tasks(p, q); ++r) a_tasks.emplace_back(static_cast<int64_t>(i), r);
  }
  at::parallel_for(0, static_cast<int64_t>(a_tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const auto [i, r] = a_tasks[t];
      pack_a(problems[i], packed[i], r);
    }
  });

  // 2. The products (each thread packs B panels into its own buffers).
  static thread_local std::vector<uint32_t> panel, stage;
  const auto schedule = gemm_schedule::make_schedule(problems, kPanel, kBlockRows);
  gemm_schedule::run_schedule(
      schedule,
      [&](const Unit& u) {
        const Bf16Gemm& p = problems[u.problem];
        const int64_t kw = packed[u.problem].kw, j0 = u.panel * kPanel;
        panel.resize(kw * kPanel);
        pack_b_panel(p, kw, j0, std::min(kPanel, p.n - j0), panel.data(), stage);
      },
      [&](const Unit& u) { run_unit(problems[u.problem], packed[u.problem], u, panel.data()); });
}

#else  // below AVX512: the host never calls it (bf16_gemm_available)

void bf16_gemm_cpu_kernel(const std::vector<Bf16Gemm>&) {
  TORCH_CHECK(false, "maven_fast: the bf16 GEMM kernels need an AVX512-BF16 CPU (bf16_gemm_available() is false)");
}

#endif

}  // namespace MAVEN_FAST_CPU_NS
}  // namespace maven_fast
