// CPU registration of maven_fast::cross_modal_block and its backward: the
// shared orchestration (cross_modal.cpp) with the CPU kernels, per CPU capability.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include <mutex>

#include "common/cpu_pool.h"
#include "common/cpu_gemm.h"
#include "cross_modal/cross_modal_common.h"

namespace maven_fast {
namespace {

using cross_modal::AttentionProblem;
using cross_modal::CombineParams;
using cross_modal::DropoutParams;

struct Cpu {
  static const cross_modal::Kernels& kernels() {
    static const cross_modal::Kernels k{
        [](at::ScalarType t, const std::vector<AttentionProblem>& p, const DropoutParams& d) {
          MAVEN_FAST_CPU_DISPATCH(cross_modal_attention_forward_cpu_kernel, t, p, d);
        },
        [](at::ScalarType t, const std::vector<AttentionProblem>& p, const DropoutParams& d) {
          MAVEN_FAST_CPU_DISPATCH(cross_modal_attention_backward_cpu_kernel, t, p, d);
        },
        [](at::ScalarType t, const CombineParams& c) {
          MAVEN_FAST_CPU_DISPATCH(cross_modal_combine_forward_cpu_kernel, t, c);
        },
        [](at::ScalarType t, const CombineParams& c) {
          MAVEN_FAST_CPU_DISPATCH(cross_modal_combine_backward_cpu_kernel, t, c);
        },
        &cpu_pool_empty,
        &cpu_gemm_group,  // few-row and bf16 products on their own kernels (common/cpu_gemm.h)
    };
    return k;
  }
  // The op runs below autograd: its internal views (narrow/select of the
  // parameters and buffers, dozens per call) skip the ADInplaceOrView kernel
  // and its view bookkeeping, a measurable share of the host time at small shapes.
  static at::AutoDispatchBelowADInplaceOrView enter(const char*, cross_modal::BlockArgs&) { return {}; }

  // Read in place (the op's checks put it on the CPU: on the inputs' device).
  static cross_modal::RngSource rng_from_tensor(const at::Tensor& rng) {
    const int64_t* v = rng.const_data_ptr<int64_t>();
    cross_modal::RngSource r;
    r.seed = static_cast<uint64_t>(v[0]);
    r.offset = static_cast<uint64_t>(v[1]);
    return r;
  }

  // A fresh seed from torch's default CPU generator (reproducible under
  // torch.manual_seed); offset 0.
  static cross_modal::RngSource draw_rng(const at::Tensor&, uint64_t) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    cross_modal::RngSource r;
    r.seed = gen.get<at::CPUGeneratorImpl>()->random64();
    return r;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CPU, m) {
  m.impl("cross_modal_block", &cross_modal::forward_op<Cpu>);
  m.impl("cross_modal_block_backward", &cross_modal::backward_op<Cpu>);
}

}  // namespace maven_fast
