// maven_fast's CUDA kernels compiled for the CPU emulator (include/emu_cuda.h),
// behind the same host code as the real ops, on CPU tensors: forward(...) and
// backward(...) take the arguments of maven_fast::cross_modal_block and its
// backward (orchestration: cross_modal.cpp); polar_head_forward/backward those
// of maven_fast::polar_head and its backward (polar_head_cuda_ops.h).
#include <torch/extension.h>

#include "cross_modal/cross_modal_common.h"
#include "cross_modal/cross_modal_cuda_table.h"
#include "polar_head/polar_head_cuda_ops.h"

using namespace maven_fast;

// The real op's kernel table, in an environment without a device.
struct EmuEnv {
  static cudaStream_t stream() { return nullptr; }
  // Workspaces start as garbage (0xFF bytes), as fresh device memory may.
  static at::Tensor workspace(size_t bytes) { return at::full({(int64_t)bytes}, 0xFF, at::kByte); }
  static void check(const cuda::LaunchStatus& s) { TORCH_CHECK(s.ok(), "emu: ", s.kernel, " failed"); }
};

static const cross_modal::Kernels& kernels() { return cross_modal::cuda_kernel_table<EmuEnv>(); }

// The emulated device's memory is the host's: an `rng` tensor is read by the
// kernels through its pointer, as the CUDA op reads a CUDA tensor (values of
// a CPU tensor the CUDA op reads on the host take the other, simpler path).
struct EmuDevice {
  static cross_modal::RngSource rng_from_tensor(const at::Tensor& rng) {
    cross_modal::RngSource r;
    r.seed_ptr = rng.const_data_ptr<int64_t>();
    r.offset_ptr = r.seed_ptr + 1;
    return r;
  }
  // A generator under graph capture: seed and offset in memory, plus an intragraph offset.
  static cross_modal::RngSource draw_rng(const at::Tensor&, uint64_t increment) {
    static int64_t state[2] = {0x5eed5eed5eedLL, 40};
    cross_modal::RngSource r;
    r.seed_ptr = &state[0];
    r.offset_ptr = &state[1];
    r.offset_add = 4;
    state[1] += static_cast<int64_t>(increment) + 4;
    return r;
  }
};

// As the CUDA op: lengths are checked by the kernels, not on the host.
static cross_modal::BlockArgs emu_args(cross_modal::BlockArgs a) {
  a.check_lengths_on_host = false;
  return cross_modal::device_block_args<EmuDevice>(std::move(a));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> fwd(
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, std::vector<at::Tensor> in_w, std::vector<at::Tensor> in_b,
    std::vector<at::Tensor> out_w, std::vector<at::Tensor> out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, std::vector<int64_t> modes, double attn_p, double out_p,
    bool training, std::optional<at::Tensor> rng) {
  return cross_modal::block_forward("emu", emu_args(cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b,
                                   out_w, out_b, ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, rng)), kernels());
}

std::vector<at::Tensor> bwd(
    const at::Tensor& grad_v, const at::Tensor& grad_a, const at::Tensor& grad_t,
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, std::vector<at::Tensor> in_w, std::vector<at::Tensor> in_b,
    std::vector<at::Tensor> out_w, std::vector<at::Tensor> out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, std::vector<int64_t> modes, double attn_p, double out_p,
    bool training, std::vector<at::Tensor> saved) {
  return cross_modal::block_backward("emu", {grad_v, grad_a, grad_t},
      emu_args(cross_modal::make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b,
                                   ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, std::nullopt)), saved, kernels());
}

long syncs() { return emu_sync_count.load(); }

// ---------------------------------------------------------------- warp-level primitives
namespace maven_fast::emu_test {
template <typename T>
cudaError_t mma_tile(const T* a, const T* b, const float* c, float* d, int mode);
cudaError_t cp_async(const uint16_t* src, int rows, int split, int valid, uint16_t* after1, uint16_t* after0);
cudaError_t broken(const __nv_bfloat16* g, float* out, int what);
}  // namespace maven_fast::emu_test

static void check_launch(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, "emu: ", what, " failed: ", cudaGetErrorString(e));
}

// D = A B + C on one warp: a [16, 16], b [16, 8] (bf16 or fp16), c [16, 8] fp32.
at::Tensor mma_tile(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, int64_t mode) {
  TORCH_CHECK(a.sizes() == at::IntArrayRef({16, 16}) && b.sizes() == at::IntArrayRef({16, 8}) &&
              c.sizes() == at::IntArrayRef({16, 8}) && a.dtype() == b.dtype() && c.scalar_type() == at::kFloat);
  const at::Tensor ac = a.contiguous(), bc = b.contiguous(), cc = c.contiguous();
  at::Tensor d = at::full({16, 8}, NAN, c.options());
  if (a.scalar_type() == at::kBFloat16) {
    check_launch(emu_test::mma_tile(reinterpret_cast<const __nv_bfloat16*>(ac.data_ptr()),
                                    reinterpret_cast<const __nv_bfloat16*>(bc.data_ptr()),
                                    cc.data_ptr<float>(), d.data_ptr<float>(), static_cast<int>(mode)), "mma_tile");
  } else {
    TORCH_CHECK(a.scalar_type() == at::kHalf, "mma_tile takes bf16 or fp16");
    check_launch(emu_test::mma_tile(reinterpret_cast<const __half*>(ac.data_ptr()),
                                    reinterpret_cast<const __half*>(bc.data_ptr()),
                                    cc.data_ptr<float>(), d.data_ptr<float>(), static_cast<int>(mode)), "mma_tile");
  }
  return d;
}

// src: int16 [rows, 8]; returns shared memory after wait_group 1 and after wait_group 0.
std::tuple<at::Tensor, at::Tensor> cp_async(const at::Tensor& src, int64_t split, int64_t valid) {
  TORCH_CHECK(src.scalar_type() == at::kShort && src.dim() == 2 && src.size(1) == 8);
  const at::Tensor s = src.contiguous();
  at::Tensor a1 = at::empty_like(s), a0 = at::empty_like(s);
  check_launch(emu_test::cp_async(reinterpret_cast<const uint16_t*>(s.data_ptr()), static_cast<int>(s.size(0)),
                                  static_cast<int>(split), static_cast<int>(valid),
                                  reinterpret_cast<uint16_t*>(a1.data_ptr()),
                                  reinterpret_cast<uint16_t*>(a0.data_ptr())), "cp_async");
  return {a1, a0};
}

void broken(int64_t what) {
  at::Tensor g = at::zeros({64}, at::kBFloat16), out = at::zeros({32}, at::kFloat);
  check_launch(emu_test::broken(reinterpret_cast<const __nv_bfloat16*>(g.data_ptr()), out.data_ptr<float>(),
                                static_cast<int>(what)), "broken_kernel");
}

// The polar head ops of polar_head_cuda_ops.h on the emulated kernels: a
// device of two SMs, so the grids have several CTAs and the last-CTA reduction runs.
struct EmuPolarEnv {
  static int enter(const at::Tensor&) { return 0; }
  static int sm_count() { return 2; }
  static cudaStream_t stream() { return nullptr; }
  static void check(cudaError_t e, const char* op) { TORCH_CHECK(e == cudaSuccess, "emu: ", op, " failed"); }
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &fwd);
  m.def("backward", &bwd);
  m.def("syncs", &syncs);
  m.def("mma_tile", &mma_tile);
  m.def("cp_async", &cp_async);
  m.def("broken", &broken);
  // "auto" (tensor-core kernels where they apply) or "simt": as maven_fast._C.set_cuda_attention_kernels.
  m.def("set_attention_kernels", [](const std::string& kind) {
    TORCH_CHECK(kind == "auto" || kind == "simt", "attention kernels: 'auto' or 'simt', not '", kind, "'");
    maven_fast::cuda::set_cross_modal_attention_kernels(kind == "simt" ? maven_fast::cuda::AttentionKernels::kSimt
                                                                        : maven_fast::cuda::AttentionKernels::kAuto);
  });
  m.def("polar_head_forward", &polar_head_cuda_forward<EmuPolarEnv>);
  m.def("polar_head_backward", &polar_head_cuda_backward<EmuPolarEnv>);
}
