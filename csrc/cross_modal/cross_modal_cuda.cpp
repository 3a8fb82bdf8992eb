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
#include "cross_modal/cross_modal_cuda_table.h"

namespace maven_fast {
namespace {

struct CudaEnv {
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }
  static at::Tensor workspace(size_t bytes) {
    return at::empty({static_cast<int64_t>(bytes)},
                     at::TensorOptions().dtype(at::kByte).device(at::kCUDA, c10::cuda::current_device()));
  }
  static void check(const cuda::LaunchStatus& st) {
    TORCH_CHECK(st.ok(), "maven_fast cross_modal_block (CUDA): ", st.kernel, " failed: ",
                cudaGetErrorString(st.error));
  }
};

struct Cuda {
  static const cross_modal::Kernels& kernels() { return cross_modal::cuda_kernel_table<CudaEnv>(); }

  // The dtype the kernels take, the length-check rule under graph capture, and
  // the inputs' device as the current one for the call.
  static c10::cuda::CUDAGuard enter(const char* op, cross_modal::BlockArgs& a) {
    const at::Tensor& x_v = a.x[0];
    TORCH_CHECK(x_v.is_cuda(), op, " (CUDA): `x_v` is on ", x_v.device(),
                " while other arguments are on a CUDA device; move them to one device");
    cross_modal::to_cuda_dtype(x_v.scalar_type());
    // (c10's form of at::cuda::currentStreamCaptureStatus, whose header needs the
    // cuSPARSE headers; the inputs' device has a context already.)
    a.check_lengths_on_host =
        c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
    return c10::cuda::CUDAGuard(x_v.device());
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CUDA, m) {
  m.impl("cross_modal_block", &cross_modal::forward_op<Cuda>);
  m.impl("cross_modal_block_backward", &cross_modal::backward_op<Cuda>);
}

}  // namespace maven_fast
