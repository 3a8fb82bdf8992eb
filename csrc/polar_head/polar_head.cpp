// Device-independent part of the polar head op: argument checks and the
// normalisation every backend shares (see polar_head_common.h).
#include "polar_head/polar_head_common.h"

#include <ATen/ATen.h>

#include "common/checks.h"

namespace maven_fast {

void polar_head_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& bias, const std::optional<at::Tensor>& target,
                             const std::optional<at::Tensor>& mask) {
  check_defined(x, op, "x");
  check_dim(x, 2, op, "x", "[N, D] features");
  check_floating(x, op, "x");
  check_dim(weight, 2, op, "weight", "[2, D]");
  TORCH_CHECK(weight.size(0) == 2 && weight.size(1) == x.size(1), op,
              ": `weight` must have shape [2, D] = [2, ", x.size(1), "] to match x [N, D] = ",
              x.sizes(), ", got ", weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == 2, op, ": `bias` must have shape [2], got ",
              bias.sizes());
  TORCH_CHECK(x.size(1) > 0, op, ": `x` has no features (D = 0)");
  check_same_dtype(weight, x, op, "weight", "x");
  check_same_dtype(bias, x, op, "bias", "x");
  check_same_device(weight, x, op, "weight", "x");
  check_same_device(bias, x, op, "bias", "x");
  if (target) {
    check_floating(*target, op, "target");
    TORCH_CHECK(target->dim() == 2 && target->size(0) == x.size(0) && target->size(1) == 2, op,
                ": `target` must have shape [N, 2] = [", x.size(0), ", 2] (valence, arousal), got ",
                target->sizes());
    check_same_device(*target, x, op, "target", "x");
  }
  if (mask) {
    TORCH_CHECK(target.has_value(), op,
                ": `mask` was given without `target`; the mask selects the frames of the loss");
    TORCH_CHECK(mask->scalar_type() == at::kBool, op,
                ": `mask` must be a bool tensor (True = valid frame), got ", mask->scalar_type(),
                "; pass mask.bool() or (labels != -5).all(-1)");
    TORCH_CHECK(mask->dim() == 1 && mask->size(0) == x.size(0), op,
                ": `mask` must have shape [N] = [", x.size(0), "], got ", mask->sizes());
    check_same_device(*mask, x, op, "mask", "x");
  }
}

PolarHeadInputs polar_head_normalize(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias,
                                     const std::optional<at::Tensor>& target,
                                     const std::optional<at::Tensor>& mask) {
  polar_head_check_inputs(op, x, weight, bias, target, mask);
  const auto acc = polar_head_acc_dtype(x.scalar_type());
  PolarHeadInputs in;
  // Rows may be strided (e.g. a column slice of a wider tensor); the feature
  // dimension must be dense. Anything else is copied once, here.
  in.x = (x.size(1) == 1 || x.stride(1) == 1) && x.stride(0) >= x.size(1) ? x : x.contiguous();
  in.weight = weight.contiguous();
  in.bias = bias.contiguous();
  if (target) in.target = target->to(acc).contiguous();
  if (mask) in.mask = mask->contiguous();
  return in;
}

at::ScalarType polar_head_acc_dtype(at::ScalarType s) {
  return s == at::kDouble ? at::kDouble : at::kFloat;
}

PolarHeadForwardOutputs polar_head_allocate_forward(const at::Tensor& x) {
  const auto n = x.size(0);
  auto acc = x.options().dtype(polar_head_acc_dtype(x.scalar_type()));
  return {at::empty({n, 2}, x.options()), at::empty({n, 2}, x.options()), at::empty({}, acc),
          at::empty({}, acc)};
}

std::optional<at::Tensor> contiguous_grad(const std::optional<at::Tensor>& g, const at::Tensor& x,
                                          const char* op, const char* name,
                                          at::IntArrayRef shape) {
  if (!g || !g->defined()) return std::nullopt;
  TORCH_CHECK(g->sizes() == shape, op, ": `", name, "` must have shape ", shape, ", got ",
              g->sizes());
  check_same_device(*g, x, op, name, "x");
  return g->to(shape.empty() ? polar_head_acc_dtype(x.scalar_type()) : x.scalar_type())
      .contiguous();
}

}  // namespace maven_fast
