// Device-independent part of the cross-modal block ops: argument checks, the
// pathway plan (projection slots), and the forward/backward orchestration
// (grouped GEMMs through ATen, the attention and combine kernels through the
// per-device function table).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "common/gemm_call.h"
#include "cross_modal/cross_modal.h"

namespace maven_fast::cross_modal {

using maven_fast::GemmCall;

struct Kernels {
  void (*attention_forward)(at::ScalarType, const std::vector<AttentionProblem>&, const DropoutParams&);
  void (*attention_backward)(at::ScalarType, const std::vector<AttentionProblem>&, const DropoutParams&);
  void (*combine_forward)(at::ScalarType, const CombineParams&);
  void (*combine_backward)(at::ScalarType, const CombineParams&);
  // Optional: allocates the op's buffers and outputs (null: at::empty). The
  // CPU ops use a caching pool (common/cpu_pool.h).
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& opts) = nullptr;
  // Optional: runs GEMMs that do not depend on each other (null: one ATen call
  // each). The CPU ops' dispatch (common/cpu_gemm.h) runs the few-row and the
  // bf16 ones on their own kernels.
  void (*gemm_batch)(const std::vector<GemmCall>& calls) = nullptr;
};

// The op arguments, as the schema in registration.cpp lists them.
struct BlockArgs {
  std::array<at::Tensor, kNumModalities> x;    // [B, T_m, D]
  std::array<at::Tensor, kNumModalities> len;  // [B] integer
  std::vector<at::Tensor> in_w, in_b, out_w, out_b;  // 6 each, pathway order
  at::Tensor ln_w, ln_b;
  double ln_eps = 1e-5;
  int64_t heads = 1;
  std::vector<int64_t> modes;  // 6 PathwayMode
  double attn_p = 0.0, out_p = 0.0;
  bool training = false;
  // Forward: int64 [2] (seed, offset) of the dropout masks, or none: then the
  // op draws them from the default generator of the inputs' device.
  std::optional<at::Tensor> rng;
  // Set by the device (see forward_op): how an `rng` tensor is read, and how
  // a call draws its seed and offset when none is given (`increment`: the
  // counter values one call uses, i.e. the batch size).
  RngSource (*rng_from_tensor)(const at::Tensor& rng) = nullptr;
  RngSource (*draw_rng)(const at::Tensor& like, uint64_t increment) = nullptr;
  // Check 0 <= len <= T on the host: where the lengths live on the host (CPU).
  // GPU ops never read the device from the host: their forward kernels check
  // the lengths they read (an out-of-range length is a device-side error) and
  // every kernel clamps them to [0, T], so memory access stays in bounds.
  bool check_lengths_on_host = true;
};

// BlockArgs from the op arguments (the schema's order, see registration.cpp).
BlockArgs make_block_args(const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t,
                          const at::Tensor& len_v, const at::Tensor& len_a, const at::Tensor& len_t,
                          at::TensorList in_w, at::TensorList in_b, at::TensorList out_w,
                          at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
                          double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p,
                          double out_p, bool training, const std::optional<at::Tensor>& rng);

// Where each pathway's projections live. Modality m's grouped input
// projection has n_in[m] slots of D columns; slots are assigned for m in
// order, then pathways in order: Q (general, absorbed) where m queries; K, V
// (general) or V (key length 1) where m is attended. The row-wise attention
// outputs of modality m have n_out[m] slots (general and absorbed pathways
// where m queries, in pathway order).
struct Plan {
  int64_t batch = 0, d = 0, heads = 1, head_dim = 0;
  std::array<int64_t, kNumModalities> t{};
  std::array<int64_t, kNumPathways> mode{};
  std::array<int64_t, kNumModalities> n_in{}, n_out{};
  std::array<int64_t, kNumPathways> q_slot{}, k_slot{}, v_slot{}, o_slot{};
  double attn_p = 0.0, out_p = 0.0;  // effective (0 when not training)
};

// Entries of the full `saved` layout of the forward op (see cross_modal.cpp);
// the op returns the ones the plan needs.
constexpr int kNumSaved = 37;
// Number of tensors the backward op returns: dx_v, dx_a, dx_t, then 6 each of
// d in_proj_weight, d in_proj_bias, d out_proj.weight, d out_proj.bias, then
// d ln_weight, d ln_bias.
constexpr int kNumGrads = 3 + 4 * kNumPathways + 2;

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> block_forward(
    const char* op, BlockArgs args, const Kernels& k);

std::vector<at::Tensor> block_backward(const char* op, std::array<at::Tensor, kNumModalities> grad,
                                       BlockArgs args, const std::vector<at::Tensor>& saved,
                                       const Kernels& k);

constexpr const char* kForwardOp = "maven_fast::cross_modal_block";
constexpr const char* kBackwardOp = "maven_fast::cross_modal_block_backward";

// The two ops of one device, with the schema's signatures (registration.cpp).
// `Device` provides
//   static const Kernels& kernels();
//   static auto enter(const char* op, BlockArgs& a);   // device checks and settings;
//                                                      // the result (e.g. a device
//                                                      // guard) lives for the call
//   static RngSource rng_from_tensor(const at::Tensor& rng);       // see BlockArgs
//   static RngSource draw_rng(const at::Tensor& like, uint64_t increment);
template <class Device>
BlockArgs device_block_args(BlockArgs a) {
  a.rng_from_tensor = &Device::rng_from_tensor;
  a.draw_rng = &Device::draw_rng;
  return a;
}

template <class Device>
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> forward_op(
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, at::TensorList in_w, at::TensorList in_b,
    at::TensorList out_w, at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p, double out_p,
    bool training, const std::optional<at::Tensor>& rng) {
  BlockArgs a = device_block_args<Device>(make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w,
      in_b, out_w, out_b, ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, rng));
  const auto scope = Device::enter(kForwardOp, a);
  return block_forward(kForwardOp, std::move(a), Device::kernels());
}

template <class Device>
std::vector<at::Tensor> backward_op(
    const at::Tensor& grad_v, const at::Tensor& grad_a, const at::Tensor& grad_t,
    const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t, const at::Tensor& len_v,
    const at::Tensor& len_a, const at::Tensor& len_t, at::TensorList in_w, at::TensorList in_b,
    at::TensorList out_w, at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
    double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p, double out_p,
    bool training, at::TensorList saved) {
  BlockArgs a = device_block_args<Device>(make_block_args(x_v, x_a, x_t, len_v, len_a, len_t, in_w,
      in_b, out_w, out_b, ln_w, ln_b, ln_eps, heads, modes, attn_p, out_p, training, std::nullopt));
  const auto scope = Device::enter(kBackwardOp, a);
  return block_backward(kBackwardOp, {grad_v, grad_a, grad_t}, std::move(a), saved.vec(),
                        Device::kernels());
}

}  // namespace maven_fast::cross_modal
