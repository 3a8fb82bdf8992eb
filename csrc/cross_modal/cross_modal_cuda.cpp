// CUDA registration of maven_fast::cross_modal_block and its backward: the
// SAME device-independent orchestration as the CPU (cross_modal.cpp: checks,
// grouped GEMMs through ATen, i.e. cuBLAS here) with the CUDA kernels of
// cross_modal_attention_kernel.cu and cross_modal_combine_kernel.cu in its
// Kernels table. Everything runs on the current stream of the inputs' device;
// workspaces come from the caching allocator (stream-ordered).
//
// Host syncs: the dropout seed (`rng`) is a CPU tensor read in place (none);
// the key lengths are range-checked with ONE device-to-host copy per call,
// except while the current stream is capturing a CUDA graph, where a sync is
// not allowed: there the check is skipped and the kernels' clamp of every
// length to [0, T] keeps memory access in bounds (out-of-range lengths then
// act as clamped instead of raising).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cross_modal/cross_modal_common.h"
#include "cross_modal/cross_modal_cuda.h"

namespace maven_fast {
namespace {

using cross_modal::AttentionProblem;
using cross_modal::CombineParams;
using cross_modal::DropoutParams;

constexpr const char* kForwardOp = "maven_fast::cross_modal_block";
constexpr const char* kBackwardOp = "maven_fast::cross_modal_block_backward";

cuda::DType to_cuda_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return cuda::DType::F32;
    case at::kHalf: return cuda::DType::F16;
    case at::kBFloat16: return cuda::DType::BF16;
    default:
      TORCH_CHECK(false, "maven_fast cross_modal_block (CUDA): unsupported dtype ", s,
                  "; the CUDA kernels take float32, float16 or bfloat16 (float64: backend='cpu')");
  }
}

void check_launch(const cuda::LaunchStatus& st) {
  TORCH_CHECK(st.ok(), "maven_fast cross_modal_block (CUDA): ", st.kernel, " failed: ",
              cudaGetErrorString(st.error));
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

at::Tensor workspace(size_t bytes) {
  return at::empty({static_cast<int64_t>(bytes)},
                   at::TensorOptions().dtype(at::kByte).device(at::kCUDA, c10::cuda::current_device()));
}

const cross_modal::Kernels& cuda_kernels() {
  static const cross_modal::Kernels k{
      [](at::ScalarType t, const std::vector<AttentionProblem>& p, const DropoutParams& d) {
        check_launch(cuda::cross_modal_attention_forward(to_cuda_dtype(t), p, d, stream()));
      },
      [](at::ScalarType t, const std::vector<AttentionProblem>& p, const DropoutParams& d) {
        const at::Tensor ws = workspace(cuda::cross_modal_attention_backward_workspace_bytes(p));
        check_launch(
            cuda::cross_modal_attention_backward(to_cuda_dtype(t), p, d, ws.data_ptr(), stream()));
      },
      [](at::ScalarType t, const CombineParams& c) {
        check_launch(cuda::cross_modal_combine_forward(to_cuda_dtype(t), c, stream()));
      },
      [](at::ScalarType t, const CombineParams& c) {
        const at::Tensor ws = workspace(cuda::cross_modal_combine_backward_workspace_bytes(c));
        check_launch(
            cuda::cross_modal_combine_backward(to_cuda_dtype(t), c, ws.data_ptr(), stream()));
      },
  };
  return k;
}

// The dtype the kernels take, and the length check rule under graph capture.
void prepare(const at::Tensor& x_v, cross_modal::BlockArgs& a) {
  to_cuda_dtype(x_v.scalar_type());
  // (c10's form of at::cuda::currentStreamCaptureStatus, whose header needs the
  // cuSPARSE headers; the inputs' device has a context already.)
  a.check_lengths_on_host =
      c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> cross_modal_block_cuda(
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, at::TensorList in_w, at::TensorList in_b,
    at::TensorList out_w, at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p, double out_p,
    bool training, const std::optional<at::Tensor>& rng) {
  TORCH_CHECK(x_v.is_cuda(), kForwardOp, " (CUDA): `x_v` is on ", x_v.device(),
              " while other arguments are on a CUDA device; move them to one device");
  const c10::cuda::CUDAGuard guard(x_v.device());
  auto a = cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w,
                                        out_b, ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p,
                                        training, rng);
  prepare(x_v, a);
  return cross_modal::block_forward(kForwardOp, std::move(a), cuda_kernels());
}

std::vector<at::Tensor> cross_modal_block_backward_cuda(
    const at::Tensor& grad_v, const at::Tensor& grad_a, const at::Tensor& grad_t,
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, at::TensorList in_w, at::TensorList in_b,
    at::TensorList out_w, at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p, double out_p,
    bool training, const std::optional<at::Tensor>& rng, at::TensorList saved) {
  TORCH_CHECK(x_v.is_cuda(), kBackwardOp, " (CUDA): `x_v` is on ", x_v.device(),
              " while other arguments are on a CUDA device; move them to one device");
  const c10::cuda::CUDAGuard guard(x_v.device());
  auto a = cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w,
                                        out_b, ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p,
                                        training, rng);
  prepare(x_v, a);
  return cross_modal::block_backward(kBackwardOp, {grad_v, grad_a, grad_t}, std::move(a),
                                     saved.vec(), cuda_kernels());
}

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CUDA, m) {
  m.impl("cross_modal_block", &cross_modal_block_cuda);
  m.impl("cross_modal_block_backward", &cross_modal_block_backward_cuda);
}

}  // namespace maven_fast
