// CUDA registration of maven_fast::polar_head and its backward: the ops of
// polar_head_cuda_ops.h (checks, allocation, launch of polar_head_kernel.cu)
// on the current stream of the inputs' device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "polar_head/polar_head_cuda_ops.h"

namespace maven_fast {
namespace {

struct CudaEnv {
  static c10::cuda::CUDAGuard enter(const at::Tensor& x) { return c10::cuda::CUDAGuard(x.device()); }
  static int sm_count() {
    int device = 0, count = 0;
    TORCH_CHECK(cudaGetDevice(&device) == cudaSuccess, "maven_fast: cudaGetDevice failed");
    TORCH_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) == cudaSuccess,
                "maven_fast: cannot read the SM count of CUDA device ", device);
    return count;
  }
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }
  static void check(cudaError_t e, const char* op) {
    TORCH_CHECK(e == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(e));
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CUDA, m) {
  m.impl("polar_head", &polar_head_cuda_forward<CudaEnv>);
  m.impl("polar_head_backward", &polar_head_cuda_backward<CudaEnv>);
}

}  // namespace maven_fast
