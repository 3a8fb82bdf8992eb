// The CUDA kernels of the cross-modal block compiled for the CPU emulator
// (include/emu_cuda.h), behind the same orchestration as the real ops
// (cross_modal.cpp), on CPU tensors: forward(...) and backward(...) take the
// arguments of maven_fast::cross_modal_block and its backward.
#include <torch/extension.h>

#include "cross_modal/cross_modal_common.h"
#include "cross_modal/cross_modal_cuda_table.h"

using namespace maven_fast;

// The real op's kernel table, in an environment without a device.
struct EmuEnv {
  static cudaStream_t stream() { return nullptr; }
  // Workspaces start as garbage (0xFF bytes), as fresh device memory may.
  static at::Tensor workspace(size_t bytes) { return at::full({(int64_t)bytes}, 0xFF, at::kByte); }
  static void check(const cuda::LaunchStatus& s) { TORCH_CHECK(s.ok(), "emu: ", s.kernel, " failed"); }
};

static const cross_modal::Kernels& kernels() { return cross_modal::cuda_kernel_table<EmuEnv>(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> fwd(
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, std::vector<at::Tensor> in_w, std::vector<at::Tensor> in_b,
    std::vector<at::Tensor> out_w, std::vector<at::Tensor> out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, std::vector<int64_t> modes, double attn_p, double out_p,
    bool training, std::optional<at::Tensor> rng) {
  return cross_modal::block_forward("emu", cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b,
                                   ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, rng), kernels());
}

std::vector<at::Tensor> bwd(
    const at::Tensor& grad_v, const at::Tensor& grad_a, const at::Tensor& grad_t,
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, std::vector<at::Tensor> in_w, std::vector<at::Tensor> in_b,
    std::vector<at::Tensor> out_w, std::vector<at::Tensor> out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, std::vector<int64_t> modes, double attn_p, double out_p,
    bool training, std::optional<at::Tensor> rng, std::vector<at::Tensor> saved) {
  return cross_modal::block_backward("emu", {grad_v, grad_a, grad_t},
      cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b,
                                   ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, rng), saved, kernels());
}

long syncs() { return emu_sync_count.load(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &fwd);
  m.def("backward", &bwd);
  m.def("syncs", &syncs);
}
