// CPU registration of maven_fast::polar_head and its backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "polar_head/polar_head_common.h"

namespace maven_fast {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> polar_head_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& target, const std::optional<at::Tensor>& mask, bool bounded) {
  const auto in = polar_head_normalize("maven_fast::polar_head", x, weight, bias, target, mask);
  auto out = polar_head_allocate_forward(in.x);
  MAVEN_FAST_CPU_DISPATCH(polar_head_forward_cpu_kernel, in.x, in.weight, in.bias, in.target,
                          in.mask, bounded, out.valence_arousal, out.theta_intensity, out.loss,
                          out.n_valid);
  return {out.valence_arousal, out.theta_intensity, out.loss, out.n_valid};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> polar_head_backward_cpu(
    const std::optional<at::Tensor>& grad_va, const std::optional<at::Tensor>& grad_ti,
    const std::optional<at::Tensor>& grad_loss, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const std::optional<at::Tensor>& target,
    const std::optional<at::Tensor>& mask, const at::Tensor& n_valid, bool bounded) {
  constexpr const char* op = "maven_fast::polar_head_backward";
  const auto in = polar_head_normalize(op, x, weight, bias, target, mask);
  const int64_t n = in.x.size(0);
  const auto gva = contiguous_grad(grad_va, in.x, op, "grad_valence_arousal", {n, 2});
  const auto gti = contiguous_grad(grad_ti, in.x, op, "grad_theta_intensity", {n, 2});
  const auto gl = contiguous_grad(grad_loss, in.x, op, "grad_loss", {});
  auto grad_x = at::empty({n, in.x.size(1)}, in.x.options());
  auto grad_w = at::empty_like(in.weight);
  auto grad_b = at::empty_like(in.bias);
  MAVEN_FAST_CPU_DISPATCH(polar_head_backward_cpu_kernel, gva, gti, gl, in.x, in.weight, in.bias,
                          in.target, in.mask, n_valid, bounded, grad_x, grad_w, grad_b);
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CPU, m) {
  m.impl("polar_head", &polar_head_cpu);
  m.impl("polar_head_backward", &polar_head_backward_cpu);
}

}  // namespace maven_fast
