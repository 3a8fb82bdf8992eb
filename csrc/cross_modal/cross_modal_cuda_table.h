// The Kernels table of the CUDA kernels (cross_modal_cuda.h), shared by the
// CUDA op (cross_modal_cuda.cpp) and the CPU emulator of those kernels
// (tests/cuda_emulation), which differ only in their environment:
//   Env::stream()           the stream to launch on
//   Env::workspace(bytes)   a byte tensor for a kernel's workspace
//   Env::check(status)      raise on a failed launch
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "cross_modal/cross_modal_common.h"
#include "cross_modal/cross_modal_cuda.h"

namespace maven_fast::cross_modal {

inline cuda::DType to_cuda_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return cuda::DType::F32;
    case at::kHalf: return cuda::DType::F16;
    case at::kBFloat16: return cuda::DType::BF16;
    default:
      TORCH_CHECK(false, "maven_fast cross_modal_block (CUDA): unsupported dtype ", s,
                  "; the CUDA kernels take float32, float16 or bfloat16 (float64: backend='cpu')");
  }
}

template <class Env>
const Kernels& cuda_kernel_table() {
  static const Kernels k{
      [](at::ScalarType t, const std::vector<AttentionProblem>& p, const DropoutParams& d) {
        Env::check(cuda::cross_modal_attention_forward(to_cuda_dtype(t), p, d, Env::stream()));
      },
      [](at::ScalarType t, const std::vector<AttentionProblem>& p, const DropoutParams& d) {
        const at::Tensor ws = Env::workspace(cuda::cross_modal_attention_backward_workspace_bytes(p));
        Env::check(cuda::cross_modal_attention_backward(to_cuda_dtype(t), p, d, ws.data_ptr(),
                                                        Env::stream()));
      },
      [](at::ScalarType t, const CombineParams& c) {
        Env::check(cuda::cross_modal_combine_forward(to_cuda_dtype(t), c, Env::stream()));
      },
      [](at::ScalarType t, const CombineParams& c) {
        const at::Tensor ws = Env::workspace(cuda::cross_modal_combine_backward_workspace_bytes(c));
        Env::check(cuda::cross_modal_combine_backward(to_cuda_dtype(t), c, ws.data_ptr(),
                                                      Env::stream()));
      },
  };
  return k;
}

}  // namespace maven_fast::cross_modal
