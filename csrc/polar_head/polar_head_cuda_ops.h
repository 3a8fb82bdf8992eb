// The polar head ops on the CUDA kernels (polar_head_cuda.h): checks,
// allocation, workspace and launch, for an environment `Env` that provides
//   static auto enter(const at::Tensor& x);   // the device scope of the call (a guard)
//   static int sm_count();                    // SMs of the current device
//   static cudaStream_t stream();             // the stream to launch on
//   static void check(cudaError_t e, const char* op);   // raise on a failed launch
// Shared by the CUDA registration (polar_head_cuda.cpp) and the CPU emulator
// of the kernels (tests/cuda_emulation), which differ only in Env.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>

#include "polar_head/polar_head_common.h"
#include "polar_head/polar_head_cuda.h"

namespace maven_fast {

inline cuda::DType polar_head_cuda_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return cuda::DType::F32;
    case at::kDouble: return cuda::DType::F64;
    case at::kHalf: return cuda::DType::F16;
    case at::kBFloat16: return cuda::DType::BF16;
    default: TORCH_CHECK(false, "maven_fast::polar_head (CUDA): unsupported dtype ", s);
  }
}

inline void check_cuda_limits(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.size(1) <= cuda::kPolarHeadMaxD, op, ": the CUDA kernel supports D <= ",
              cuda::kPolarHeadMaxD, ", got D = ", x.size(1), "; use backend='cpu' or 'eager'");
}

template <class Env>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> polar_head_cuda_forward(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::optional<at::Tensor>& target, const std::optional<at::Tensor>& mask, bool bounded) {
  constexpr const char* op = "maven_fast::polar_head";
  const auto in = polar_head_normalize(op, x, weight, bias, target, mask);
  check_cuda_limits(op, in.x);
  const auto scope = Env::enter(in.x);
  auto out = polar_head_allocate_forward(in.x);
  const auto dtype = polar_head_cuda_dtype(in.x.scalar_type());
  const int grid = cuda::polar_head_grid(in.x.size(0), Env::sm_count(), /*backward=*/false);
  auto ws = at::empty({int64_t(cuda::polar_head_workspace_bytes(grid, in.x.size(1), dtype, false))},
                      in.x.options().dtype(at::kByte));
  auto counter = at::zeros({1}, in.x.options().dtype(at::kInt));
  cuda::PolarHeadForwardArgs a{};
  a.x = in.x.const_data_ptr();
  a.ldx = in.x.stride(0);
  a.weight = in.weight.const_data_ptr();
  a.bias = in.bias.const_data_ptr();
  a.target = in.target ? in.target->const_data_ptr() : nullptr;
  a.mask = in.mask ? in.mask->const_data_ptr<bool>() : nullptr;
  a.n = in.x.size(0);
  a.d = in.x.size(1);
  a.bounded = bounded;
  a.valence_arousal = out.valence_arousal.data_ptr();
  a.theta_intensity = out.theta_intensity.data_ptr();
  a.loss = out.loss.data_ptr();
  a.n_valid = out.n_valid.data_ptr();
  a.workspace = ws.data_ptr();
  a.counter = reinterpret_cast<unsigned int*>(counter.data_ptr<int>());
  if (a.n == 0) {
    out.loss.zero_();
    out.n_valid.zero_();
  } else {
    const cudaError_t e =
        cuda::polar_head_forward(dtype, a, grid, Env::stream());
    Env::check(e, op);
  }
  return {out.valence_arousal, out.theta_intensity, out.loss, out.n_valid};
}

template <class Env>
std::tuple<at::Tensor, at::Tensor, at::Tensor> polar_head_cuda_backward(
    const std::optional<at::Tensor>& grad_va, const std::optional<at::Tensor>& grad_ti,
    const std::optional<at::Tensor>& grad_loss, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const std::optional<at::Tensor>& target,
    const std::optional<at::Tensor>& mask, const at::Tensor& n_valid, bool bounded) {
  constexpr const char* op = "maven_fast::polar_head_backward";
  const auto in = polar_head_normalize(op, x, weight, bias, target, mask);
  check_cuda_limits(op, in.x);
  const auto scope = Env::enter(in.x);
  const int64_t n = in.x.size(0), d = in.x.size(1);
  const auto gva = contiguous_grad(grad_va, in.x, op, "grad_valence_arousal", {n, 2});
  const auto gti = contiguous_grad(grad_ti, in.x, op, "grad_theta_intensity", {n, 2});
  const auto gl = contiguous_grad(grad_loss, in.x, op, "grad_loss", {});
  const auto nv = n_valid.to(in.x.device(), polar_head_acc_dtype(in.x.scalar_type()));
  auto grad_x = at::empty({n, d}, in.x.options());
  auto grad_w = at::empty_like(in.weight);
  auto grad_b = at::empty_like(in.bias);
  if (n == 0) {
    grad_w.zero_();
    grad_b.zero_();
    return {grad_x, grad_w, grad_b};
  }
  const auto dtype = polar_head_cuda_dtype(in.x.scalar_type());
  const int grid = cuda::polar_head_grid(n, Env::sm_count(), /*backward=*/true);
  auto ws = at::empty({int64_t(cuda::polar_head_workspace_bytes(grid, d, dtype, true))},
                      in.x.options().dtype(at::kByte));
  auto counter = at::zeros({1}, in.x.options().dtype(at::kInt));
  cuda::PolarHeadBackwardArgs a{};
  a.grad_va = gva ? gva->const_data_ptr() : nullptr;
  a.grad_ti = gti ? gti->const_data_ptr() : nullptr;
  a.grad_loss = gl ? gl->const_data_ptr() : nullptr;
  a.x = in.x.const_data_ptr();
  a.ldx = in.x.stride(0);
  a.weight = in.weight.const_data_ptr();
  a.bias = in.bias.const_data_ptr();
  a.target = in.target ? in.target->const_data_ptr() : nullptr;
  a.mask = in.mask ? in.mask->const_data_ptr<bool>() : nullptr;
  a.n_valid = nv.const_data_ptr();
  a.n = n;
  a.d = d;
  a.bounded = bounded;
  a.grad_x = grad_x.data_ptr();
  a.grad_weight = grad_w.data_ptr();
  a.grad_bias = grad_b.data_ptr();
  a.workspace = ws.data_ptr();
  a.counter = reinterpret_cast<unsigned int*>(counter.data_ptr<int>());
  const cudaError_t e =
      cuda::polar_head_backward(dtype, a, grid, Env::stream());
  Env::check(e, op);
  return {grad_x, grad_w, grad_b};
}

}  // namespace maven_fast
