// maven_fast::linear and its backward on the CPU: nn.Linear's three products
// through the CPU ops' GEMM dispatch (common/cpu_gemm.h), so they run on
// maven_fast's GEMM kernels where those beat the library on this CPU.
//
//   y = x W^T + b            x [..., in], W [out, in], b [out]
//   dx = dy W,  dW = dy^T x,  db = sum over rows of dy
//
// The two backward products are independent: one group, one parallel region
// per kernel family.
#include <ATen/ATen.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/cpu_gemm.h"

namespace maven_fast {
namespace {

void check_linear_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias) {
  check_defined(x, op, "x");
  check_floating(x, op, "x");
  check_dim(weight, 2, op, "weight", "[out_features, in_features]");
  TORCH_CHECK(x.dim() >= 1, op, ": `x` must be [..., in_features] (at least 1-D), got a 0-D tensor");
  TORCH_CHECK(x.size(-1) == weight.size(1), op, ": `x` has ", x.size(-1), " features in its last dimension (shape ",
              x.sizes(), ") but `weight` ", weight.sizes(), " takes in_features = ", weight.size(1));
  check_same_device(weight, x, op, "weight", "x");
  check_same_dtype(weight, x, op, "weight", "x");
  if (bias.has_value()) {
    check_dim(*bias, 1, op, "bias", "[out_features]");
    TORCH_CHECK(bias->size(0) == weight.size(0), op, ": `bias` has ", bias->size(0), " entries but `weight` ",
                weight.sizes(), " has out_features = ", weight.size(0));
    check_same_device(*bias, x, op, "bias", "x");
    check_same_dtype(*bias, x, op, "bias", "x");
  }
}

// x [..., n] as rows [prod(...), n] (a view where the strides allow; also for n = 0).
at::Tensor as_rows(const at::Tensor& x) {
  return x.reshape({c10::multiply_integers(x.sizes().slice(0, x.dim() - 1)), x.size(-1)});
}

// x [..., n] with n replaced by `features`.
std::vector<int64_t> with_last(const at::Tensor& x, int64_t features) {
  auto sizes = x.sizes().vec();
  sizes.back() = features;
  return sizes;
}

at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_linear_args("maven_fast::linear", x, weight, bias);
  const int64_t out = weight.size(0);
  const at::Tensor rows = as_rows(x);
  at::Tensor y = at::empty({rows.size(0), out}, x.options());
  if (rows.size(0) > 0 && out > 0) cpu_gemm(y, rows, weight.t(), 0.0, 1.0, bias.has_value() ? *bias : at::Tensor());
  return y.view(with_last(x, out));
}

// Gradients (dx, dW, db) where output_mask asks for them; one not asked for is
// an empty tensor [0] (as is db for a layer without bias: the caller asks for none).
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                                   const at::Tensor& weight,
                                                                   std::array<bool, 3> output_mask) {
  constexpr const char* op = "maven_fast::linear_backward";
  check_linear_args(op, x, weight, std::nullopt);
  const int64_t in = weight.size(1), out = weight.size(0);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(with_last(x, out)), op, ": `grad_out` must have the output's shape ",
              at::IntArrayRef(with_last(x, out)), ", got ", grad_out.sizes());
  check_same_dtype(grad_out, x, op, "grad_out", "x");
  check_same_device(grad_out, x, op, "grad_out", "x");
  const at::Tensor dy = as_rows(grad_out);
  const at::Tensor rows = as_rows(x);
  const bool some_rows = dy.size(0) > 0 && out > 0 && in > 0;
  at::Tensor grad_x = output_mask[0] ? at::empty({rows.size(0), in}, x.options()) : x.new_empty({0});
  at::Tensor grad_w = output_mask[1] ? at::empty({out, in}, x.options()) : x.new_empty({0});
  at::Tensor grad_b = output_mask[2] ? dy.sum(0) : x.new_empty({0});
  std::vector<GemmCall> calls;
  if (output_mask[0] && some_rows) calls.push_back(GemmCall{grad_x, dy, weight, {}, 0.0, 1.0});
  if (output_mask[1] && some_rows) calls.push_back(GemmCall{grad_w, dy.t(), rows, {}, 0.0, 1.0});
  if (output_mask[0] && !some_rows) grad_x.zero_();
  if (output_mask[1] && !some_rows) grad_w.zero_();
  cpu_gemm_group(calls);
  if (output_mask[0]) grad_x = grad_x.view(x.sizes());
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CPU, m) {
  m.impl("linear", &linear_cpu);
  m.impl("linear_backward", &linear_backward_cpu);
}

}  // namespace maven_fast
