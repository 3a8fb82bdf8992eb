// CPU kernel of the fp32 GEMMs (fp32_gemm.h), compiled once per CPU capability.
//
//   C [m, n] (=|+=) alpha * sum_p A(i, p) B[p, j] (+ bias[j])
//
//   1. One parallel region packs the operands: B into panels one register tile
//      wide (16 columns on AVX2, 64 on AVX512), B_q[p * NC + j] = B[p, q NC + j],
//      and A^T tile by tile, the 6 rows of a register tile side by side for
//      each p, so that its broadcasts run through memory in order (read in
//      place, each p of A^T is another line: 121-126 against 167-172 GFLOP/s
//      at k = 1024 on the AVX2 EPYC). A's rows are read in place.
//   2. One parallel region (gemm_schedule.h) over units of 96 rows x 256
//      columns, block by block: per chunk of 512 k, the unit's register tiles
//      (micro_gemm.h) run down its rows for each panel, so the chunk of A (192
//      KB) stays in L2 while the panels' chunks (32 KB each on AVX2) pass
//      through L1. Panel-major units that packed B as they went, reading all
//      of A once per 16-column panel, ran below ATen's rate at m = 4096-6400
//      (A from memory for each panel).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/cpu_pool.h"
#include "common/fp32_gemm.h"
#include "common/gemm_schedule.h"
#include "common/micro_gemm.h"

namespace maven_fast {
namespace MAVEN_FAST_CPU_NS {
namespace {

using gemm_schedule::Unit;

constexpr int64_t kPanel = micro::kNV<float> * at::vec::Vectorized<float>::size();  // one tile wide
constexpr int64_t kUnitCols = 256;
constexpr int64_t kBlockRows = 16 * micro::kMR;
constexpr int64_t kPackRows = 256;  // p of A^T per packing task
constexpr int64_t kChunk = 512;    // k per pass over a unit's rows

using gemm_schedule::ceil_div;

// A(i0 + i, p) = a[(i0 / 6) * tile + i * rs + p * ps] for a register tile's
// first row i0 (a multiple of 6) and its rows i < 6.
struct OperandA {
  const float* a = nullptr;
  int64_t tile = 0, rs = 0, ps = 0;
};

// Floats per packed tile of A^T: 6 per p, and 16 more so that consecutive
// tiles do not start on the same L1 sets (measured for the bf16 kernels'
// packed A^T; here kept, not measured apart).
int64_t packed_tile(int64_t k) { return micro::kMR * k + 16; }

int64_t packed_a_floats(const Fp32Gemm& p) {
  return p.a_transposed ? (p.m + micro::kMR - 1) / micro::kMR * packed_tile(p.k) : 0;
}

// Packing task r of A^T: the 96 rows of block r % blocks (16 tiles) for p in
// a range of 256, so a task touches few pages on both sides (tasks of 16 p over
// all tiles measured the same here).
void pack_a_transposed(const Fp32Gemm& p, float* buf, int64_t r) {
  const int64_t blocks = ceil_div(p.m, kBlockRows), tile = packed_tile(p.k);
  const int64_t i_begin = r % blocks * kBlockRows, i_end = std::min(p.m, i_begin + kBlockRows);
  const int64_t q_begin = r / blocks * kPackRows, q_end = std::min(p.k, q_begin + kPackRows);
  for (int64_t i0 = i_begin; i0 < i_end; i0 += micro::kMR) {
    float* out = buf + i0 / micro::kMR * tile;
    const int64_t rows = std::min<int64_t>(micro::kMR, p.m - i0);
    for (int64_t q = q_begin; q < q_end; ++q) {
      const float* src = p.a + q * p.lda + i0;
      float* o = out + q * micro::kMR;
      if (rows == micro::kMR) {
        std::memcpy(o, src, micro::kMR * sizeof(float));
      } else {
        for (int64_t i = 0; i < micro::kMR; ++i) o[i] = i < rows ? src[i] : 0.0f;
      }
    }
  }
}

int64_t a_pack_tasks(const Fp32Gemm& p) { return ceil_div(p.m, kBlockRows) * ceil_div(p.k, kPackRows); }

// Panel q of B: panel[p * kPanel + j] = B(p, q * kPanel + j) for j < its columns.
void pack_b_panel(const Fp32Gemm& p, int64_t q, float* panel) {
  const int64_t j0 = q * kPanel, nc = std::min(kPanel, p.n - j0);
  if (p.b_transposed) {
    micro::pack_transposed(nc, p.k, p.b + j0 * p.ldb, p.ldb, panel, kPanel);
    return;
  }
  for (int64_t r = 0; r < p.k; ++r) std::memcpy(panel + r * kPanel, p.b + r * p.ldb + j0, nc * sizeof(float));
}

// C[i, j] += bias[j] for i < rows, j < nc (the tile's rows, in L1).
void add_bias(float* c, int64_t ldc, int64_t rows, int64_t nc, const float* bias) {
  using V = at::vec::Vectorized<float>;
  for (int64_t i = 0; i < rows; ++i) {
    float* ci = c + i * ldc;
    int64_t j = 0;
    for (; j + V::size() <= nc; j += V::size()) (V::loadu(ci + j) + V::loadu(bias + j)).store(ci + j);
    if (j < nc) (V::loadu(ci + j, nc - j) + V::loadu(bias + j, nc - j)).store(ci + j, nc - j);
  }
}

// Where a problem's packed operands are.
struct Operands {
  OperandA a;
  float* b = nullptr;  // panel q at b + q * k * kPanel
};

// Chunk [p0, p0 + kc) of panel q down the unit's rows. The bias is added after
// each tile of the last chunk, not in the tile's epilogue: a bias operand
// there made GCC 12 keep the tiles' accumulators on the stack
// (tests/test_cpu_machine_code.py).
template <int NV, bool Full>
void run_panel_chunk(const Fp32Gemm& p, const Operands& ops, const Unit& u, int64_t q, int64_t p0, int64_t kc) {
  const int64_t i0 = u.block * kBlockRows, j0 = q * kPanel;
  const int64_t nc = std::min(kPanel, p.n - j0);
  const float* panel = ops.b + q * p.k * kPanel + p0 * kPanel;
  const bool last = p0 + kc == p.k;
  micro::for_row_tiles<micro::kMR>(std::min(kBlockRows, p.m - i0), [&]<int R>(int64_t i) {
    float* c = p.c + (i0 + i) * p.ldc + j0;
    const float* ai = ops.a.a + (i0 + i) / micro::kMR * ops.a.tile + p0 * ops.a.ps;
    micro::nn_tile<float, R, NV, Full>(kc, p.alpha, ai, ops.a.rs, ops.a.ps, panel, kPanel, p.accumulate || p0 > 0, c,
                                       p.ldc, nc);
    if (p.bias && last) add_bias(c, p.ldc, R, nc, p.bias + j0);
  });
}

void run_unit(const Fp32Gemm& p, const Operands& ops, const Unit& u) {
  const int64_t q0 = u.panel * kUnitCols / kPanel, q1 = std::min(ceil_div(p.n, kPanel), q0 + kUnitCols / kPanel);
  for (int64_t p0 = 0; p0 < p.k; p0 += kChunk) {
    const int64_t kc = std::min(kChunk, p.k - p0);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t nc = std::min(kPanel, p.n - q * kPanel);
      if (nc == kPanel) {
        run_panel_chunk<micro::kNV<float>, true>(p, ops, u, q, p0, kc);
      } else {
        micro::with_count<micro::kMinPartialNV<float>, micro::kNV<float>>(
            ceil_div(nc, at::vec::Vectorized<float>::size()),
            [&]<int NV>() { run_panel_chunk<NV, false>(p, ops, u, q, p0, kc); });
      }
    }
  }
}

// Packs every B, and A where it is A^T, into one scratch buffer (returned: it
// holds the packed operands that `ops` points to), in one parallel region.
at::Tensor pack_operands(const std::vector<Fp32Gemm>& problems, std::vector<Operands>& ops) {
  ops.assign(problems.size(), Operands{});
  // Problems with the same B (the weight gradients of one modality's slots all
  // multiply its input) share its packed panels.
  std::vector<int64_t> same_b(problems.size(), -1);
  int64_t floats = 0;
  for (size_t i = 0; i < problems.size(); ++i) {
    const Fp32Gemm& p = problems[i];
    for (size_t j = 0; j < i && same_b[i] < 0; ++j) {
      const Fp32Gemm& o = problems[j];
      if (same_b[j] < 0 && o.b == p.b && o.ldb == p.ldb && o.b_transposed == p.b_transposed && o.k == p.k &&
          o.n == p.n)
        same_b[i] = static_cast<int64_t>(j);
    }
    floats += packed_a_floats(p) + (same_b[i] < 0 ? ceil_div(p.n, kPanel) * kPanel * p.k : 0);
  }
  at::Tensor buffer = cpu_pool_scratch(floats, at::TensorOptions().dtype(at::kFloat));
  float* next = buffer.data_ptr<float>();
  struct Task {
    size_t problem;
    bool a;  // pack_a_transposed task r, else panel r of B
    int64_t r;
  };
  std::vector<Task> tasks;
  for (size_t i = 0; i < problems.size(); ++i) {
    const Fp32Gemm& p = problems[i];
    if (same_b[i] >= 0) {
      ops[i].b = ops[same_b[i]].b;
    } else {
      ops[i].b = next;
      next += ceil_div(p.n, kPanel) * kPanel * p.k;
      for (int64_t q = 0; q * kPanel < p.n; ++q) tasks.push_back({i, false, q});
    }
    if (!p.a_transposed) {
      ops[i].a = {p.a, micro::kMR * p.lda, p.lda, 1};
      continue;
    }
    ops[i].a = {next, packed_tile(p.k), 1, micro::kMR};
    next += packed_a_floats(p);
    for (int64_t r = 0; r < a_pack_tasks(p); ++r) tasks.push_back({i, true, r});
  }
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Task& task = tasks[t];
      const Fp32Gemm& p = problems[task.problem];
      const Operands& o = ops[task.problem];
      if (task.a) {
        pack_a_transposed(p, const_cast<float*>(o.a.a), task.r);
      } else {
        pack_b_panel(p, task.r, o.b + task.r * p.k * kPanel);
      }
    }
  });
  return buffer;
}

}  // namespace

void fp32_gemm_cpu_kernel(const std::vector<Fp32Gemm>& problems) {
  std::vector<Operands> ops;
  const at::Tensor packed = pack_operands(problems, ops);
  const auto schedule = gemm_schedule::make_schedule(problems, kUnitCols, kBlockRows, gemm_schedule::Order::kBlockMajor);
  gemm_schedule::run_schedule(
      schedule, [](const Unit&) {}, [&](const Unit& u) { run_unit(problems[u.problem], ops[u.problem], u); });
}

}  // namespace MAVEN_FAST_CPU_NS
}  // namespace maven_fast
