// The attention launchers of cross_modal_cuda.h: each problem of a call goes
// to the tensor-core kernels when they take it (and the choice is kAuto), the
// rest to the SIMT kernels: at most two forward launches (one when every
// pathway is general, as the GPU plan makes it for wide heads), each family's
// problems keeping their order. Host code only.
#include <algorithm>
#include <atomic>

#include "cross_modal/cross_modal_cuda.h"

namespace maven_fast::cuda {
namespace {

using cross_modal::AttentionProblem;

std::atomic<int> g_kernels{static_cast<int>(AttentionKernels::kAuto)};

struct Split {
  std::vector<AttentionProblem> tc, simt;
};

Split split(DType dtype, const std::vector<AttentionProblem>& problems) {
  Split s;
  const bool auto_ = cross_modal_attention_kernels() == AttentionKernels::kAuto;
  for (const auto& p : problems) (auto_ && cross_modal_attention_tc_eligible(dtype, p) ? s.tc : s.simt).push_back(p);
  return s;
}

size_t rows_of(const std::vector<AttentionProblem>& problems) {
  size_t rows = 0;
  for (const auto& a : problems) rows += static_cast<size_t>(a.batch * a.heads * a.tq);
  return rows;
}

}  // namespace

void set_cross_modal_attention_kernels(AttentionKernels kind) { g_kernels = static_cast<int>(kind); }
AttentionKernels cross_modal_attention_kernels() { return static_cast<AttentionKernels>(g_kernels.load()); }

size_t cross_modal_attention_backward_workspace_bytes(const std::vector<AttentionProblem>& problems) {
  // Both families' D rows (fp32), the tensor-core problems' first.
  return std::max<size_t>(rows_of(problems), 1) * sizeof(float) + 16;
}

LaunchStatus cross_modal_attention_forward(DType dtype, const std::vector<AttentionProblem>& problems,
                                           const cross_modal::DropoutParams& dropout, cudaStream_t stream) {
  const Split s = split(dtype, problems);
  if (!s.tc.empty()) {
    const LaunchStatus st = cross_modal_attention_tc_forward(dtype, s.tc, dropout, stream);
    if (!st.ok()) return st;
  }
  return s.simt.empty() ? LaunchStatus{} : cross_modal_attention_simt_forward(dtype, s.simt, dropout, stream);
}

LaunchStatus cross_modal_attention_backward(DType dtype, const std::vector<AttentionProblem>& problems,
                                            const cross_modal::DropoutParams& dropout, void* workspace,
                                            cudaStream_t stream) {
  const Split s = split(dtype, problems);
  if (!s.tc.empty()) {
    const LaunchStatus st = cross_modal_attention_tc_backward(dtype, s.tc, dropout, workspace, stream);
    if (!st.ok()) return st;
  }
  if (s.simt.empty()) return {};
  // The SIMT problems' D rows follow the tensor-core ones', 16-byte aligned.
  const size_t offset = (rows_of(s.tc) * sizeof(float) + 15) / 16 * 16;
  return cross_modal_attention_simt_backward(dtype, s.simt, dropout, static_cast<char*>(workspace) + offset, stream);
}

}  // namespace maven_fast::cuda
