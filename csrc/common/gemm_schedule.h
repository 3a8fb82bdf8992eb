// How the CPU GEMM kernels (bf16_gemm.h, fp32_gemm.h) share a group of
// independent products between threads: units (problem, panel of columns,
// block of rows), panel by panel or block by block, and each thread a
// contiguous run of units of equal total work (rows x columns x k). Panel by
// panel, a thread packs each panel of B it reaches into its own buffer, once
// (twice where a run starts inside a panel), and runs its units' row blocks
// against it while the rows of A stream. One parallel region for the whole
// group: no fork/join per product, no thread idle while another finishes a
// small one.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#ifndef MAVEN_FAST_CPU_NS
#error "gemm_schedule.h is for CPU kernel sources compiled per capability"
#endif

namespace maven_fast::MAVEN_FAST_CPU_NS::gemm_schedule {

struct Unit {
  int64_t problem, panel, block;
};

struct Schedule {
  std::vector<Unit> units;
  std::vector<int64_t> work_before{0};  // work of units [0, u)
};

inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

enum class Order { kPanelMajor, kBlockMajor };

// The units of `problems` (anything with m, n, k), problem by problem, in
// `order` within each.
template <typename Problem>
Schedule make_schedule(const std::vector<Problem>& problems, int64_t panel_cols, int64_t block_rows,
                       Order order = Order::kPanelMajor) {
  Schedule s;
  for (size_t i = 0; i < problems.size(); ++i) {
    const Problem& p = problems[i];
    const int64_t panels = ceil_div(p.n, panel_cols), blocks = ceil_div(p.m, block_rows);
    for (int64_t outer = 0; outer < (order == Order::kPanelMajor ? panels : blocks); ++outer)
      for (int64_t inner = 0; inner < (order == Order::kPanelMajor ? blocks : panels); ++inner) {
        const int64_t c = order == Order::kPanelMajor ? outer : inner;
        const int64_t r = order == Order::kPanelMajor ? inner : outer;
        s.units.push_back({static_cast<int64_t>(i), c, r});
        const int64_t rows = std::min(block_rows, p.m - r * block_rows);
        const int64_t cols = std::min(panel_cols, p.n - c * panel_cols);
        s.work_before.push_back(s.work_before.back() + rows * cols * p.k);
      }
  }
  return s;
}

// [first, last) units of thread t of `threads`.
inline std::pair<int64_t, int64_t> thread_units(const Schedule& s, int64_t t, int64_t threads) {
  const std::vector<int64_t>& w = s.work_before;
  auto first_at = [&](int64_t share) { return std::lower_bound(w.begin(), w.end() - 1, share) - w.begin(); };
  return {first_at(w.back() * t / threads), first_at(w.back() * (t + 1) / threads)};
}

// Every unit once, in one parallel region: pack_panel(unit) when a thread
// reaches a (problem, panel) other than the one it packed last (a no-op where
// B is packed beforehand), then run_unit(unit). Both are called on the thread
// that runs the unit.
template <typename PackPanel, typename RunUnit>
void run_schedule(const Schedule& s, const PackPanel& pack_panel, const RunUnit& run_unit) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const auto [first, last] = thread_units(s, t, threads);
      int64_t packed_problem = -1, packed_panel = -1;
      for (int64_t u = first; u < last; ++u) {
        const Unit& unit = s.units[u];
        if (unit.problem != packed_problem || unit.panel != packed_panel) {
          pack_panel(unit);
          packed_problem = unit.problem;
          packed_panel = unit.panel;
        }
        run_unit(unit);
      }
    }
  });
}

}  // namespace maven_fast::MAVEN_FAST_CPU_NS::gemm_schedule
