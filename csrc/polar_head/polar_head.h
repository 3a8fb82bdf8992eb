// Declarations of the polar head implementations (CPU kernels per CPU
// capability, and the CUDA launchers). See polar_head_math.h for the formulas.
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>
#include <tuple>

#include "common/cpu_capability.h"

// Output buffers are allocated by the caller. `loss` and `n_valid` are 0-dim
// tensors of the accumulation dtype (float32, or float64 for float64 inputs).
MAVEN_FAST_DECLARE_CPU_KERNEL(void polar_head_forward_cpu_kernel(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& target, const std::optional<at::Tensor>& mask, bool bounded,
    at::Tensor& valence_arousal, at::Tensor& theta_intensity, at::Tensor& loss,
    at::Tensor& n_valid))

MAVEN_FAST_DECLARE_CPU_KERNEL(void polar_head_backward_cpu_kernel(
    const std::optional<at::Tensor>& grad_va, const std::optional<at::Tensor>& grad_ti,
    const std::optional<at::Tensor>& grad_loss, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const std::optional<at::Tensor>& target,
    const std::optional<at::Tensor>& mask, const at::Tensor& n_valid, bool bounded,
    at::Tensor& grad_x, at::Tensor& grad_weight, at::Tensor& grad_bias))

namespace maven_fast {

// Shared argument validation for every backend; returns nothing, throws on error.
void polar_head_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& bias, const std::optional<at::Tensor>& target,
                             const std::optional<at::Tensor>& mask);

}  // namespace maven_fast
