// CUDA registration of maven_fast::cross_modal_block and its backward: the
// SAME device-independent orchestration as the CPU (cross_modal.cpp: checks,
// grouped GEMMs through ATen, i.e. cuBLAS here) with the CUDA kernels of
// cross_modal_attention_kernel.cu and cross_modal_combine_kernel.cu in its
// Kernels table. Everything runs on the current stream of the inputs' device
// (made the current device for the call); workspaces come from the caching
// allocator (stream-ordered).
//
// No host round trip, so the ops can be captured in a CUDA graph: the key
// lengths are checked by the forward kernels that read them (an out-of-range
// length stops the kernel with a device-side error naming it) and clamped to
// [0, T] by every kernel; the dropout seed and offset come from the device's
// default CUDA generator as PyTorch's own fused dropout takes them
// (philox_cuda_state: values outside a capture, device pointers that each
// replay advances inside one), or from a given `rng` tensor (a CPU tensor is
// read on the host and fixed in a captured graph; a CUDA tensor is read by the
// kernels). The forward stores the values it used in its saved `rng` entry.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <mutex>

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

  // Checks that read nothing from a device, then the inputs' device becomes
  // the current one for the call (the guard lives until the op returns, so
  // every stream query, allocation and generator draw is on that device).
  static c10::cuda::CUDAGuard enter(const char* op, cross_modal::BlockArgs& a) {
    const at::Tensor& x_v = a.x[0];
    TORCH_CHECK(x_v.is_cuda(), op, " (CUDA): `x_v` is on ", x_v.device(),
                " while other arguments are on a CUDA device; move them to one device");
    cross_modal::to_cuda_dtype(x_v.scalar_type());
    a.check_lengths_on_host = false;
    return c10::cuda::CUDAGuard(x_v.device());
  }

  // A CUDA tensor is read by the kernels; a CPU one on the host (no sync).
  static cross_modal::RngSource rng_from_tensor(const at::Tensor& rng) {
    cross_modal::RngSource r;
    if (rng.is_cuda()) {
      r.seed_ptr = rng.const_data_ptr<int64_t>();
      r.offset_ptr = r.seed_ptr + 1;
    } else {
      r.seed = static_cast<uint64_t>(rng.const_data_ptr<int64_t>()[0]);
      r.offset = static_cast<uint64_t>(rng.const_data_ptr<int64_t>()[1]);
    }
    return r;
  }

  // The default generator of the inputs' device reserves `increment` counter
  // values (graph-safe: under capture the kernels read seed and offset from
  // the generator's device memory, which every replay advances).
  static cross_modal::RngSource draw_rng(const at::Tensor& like, uint64_t increment) {
    at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator(like.device().index());
    at::PhiloxCudaState st;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      st = gen.get<at::CUDAGeneratorImpl>()->philox_cuda_state(increment);
    }
    cross_modal::RngSource r;
    if (st.captured_) {
      r.seed_ptr = st.seed_.ptr;
      r.offset_ptr = st.offset_.ptr;
      r.offset_add = st.offset_intragraph_;
    } else {
      r.seed = st.seed_.val;
      r.offset = st.offset_.val;
    }
    return r;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CUDA, m) {
  m.impl("cross_modal_block", &cross_modal::forward_op<Cuda>);
  m.impl("cross_modal_block_backward", &cross_modal::backward_op<Cuda>);
}

}  // namespace maven_fast
