// CPU registration of maven_fast::cross_modal_block and its backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cross_modal/cross_modal_common.h"

namespace maven_fast {
namespace {

using cross_modal::AttentionProblem;
using cross_modal::CombineParams;
using cross_modal::DropoutParams;

const cross_modal::Kernels& cpu_kernels() {
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
  };
  return k;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> cross_modal_block_cpu(
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, at::TensorList in_w, at::TensorList in_b,
    at::TensorList out_w, at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p, double out_p,
    bool training, const std::optional<at::Tensor>& rng) {
  return cross_modal::block_forward(
      "maven_fast::cross_modal_block",
      cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b,
                                   ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, rng),
      cpu_kernels());
}

std::vector<at::Tensor> cross_modal_block_backward_cpu(
    const at::Tensor& grad_v, const at::Tensor& grad_a, const at::Tensor& grad_t,
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, at::TensorList in_w, at::TensorList in_b,
    at::TensorList out_w, at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p, double out_p,
    bool training, const std::optional<at::Tensor>& rng, at::TensorList saved) {
  return cross_modal::block_backward(
      "maven_fast::cross_modal_block_backward", {grad_v, grad_a, grad_t},
      cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b,
                                   ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, rng),
      saved.vec(), cpu_kernels());
}

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CPU, m) {
  m.impl("cross_modal_block", &cross_modal_block_cpu);
  m.impl("cross_modal_block_backward", &cross_modal_block_backward_cpu);
}

}  // namespace maven_fast
