// What every polar head backend (CPU, CUDA) shares: validated, normalised
// inputs and the output allocation.
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>

#include "polar_head/polar_head.h"

namespace maven_fast {

struct PolarHeadInputs {
  at::Tensor x;       // [N, D], stride(1) == 1, any row stride >= D
  at::Tensor weight;  // [2, D] contiguous, dtype of x
  at::Tensor bias;    // [2] contiguous, dtype of x
  std::optional<at::Tensor> target;  // [N, 2] contiguous, accumulation dtype
  std::optional<at::Tensor> mask;    // [N] contiguous bool
};

struct PolarHeadForwardOutputs {
  at::Tensor valence_arousal, theta_intensity, loss, n_valid;
};

// float64 for float64 inputs, float32 for float32/float16/bfloat16.
at::ScalarType polar_head_acc_dtype(at::ScalarType s);

PolarHeadInputs polar_head_normalize(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias,
                                     const std::optional<at::Tensor>& target,
                                     const std::optional<at::Tensor>& mask);

PolarHeadForwardOutputs polar_head_allocate_forward(const at::Tensor& x);

// Upstream gradients: shape-checked, made contiguous in x's dtype (or the
// accumulation dtype for the 0-dim loss gradient); undefined stays nullopt.
std::optional<at::Tensor> contiguous_grad(const std::optional<at::Tensor>& g, const at::Tensor& x,
                                          const char* op, const char* name, at::IntArrayRef shape);

}  // namespace maven_fast
