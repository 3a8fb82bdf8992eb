// Kernel descriptors of the six-pathway cross-modal block: what the host
// orchestration (cross_modal.cpp) hands to the CPU kernels and to the CUDA
// launchers. Plain C++ (no torch headers), so the CUDA device sources include
// it too. Pointers are device pointers of the tensors' device.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "cross_modal/cross_modal_math.h"

namespace maven_fast::cross_modal {

// A strided [B, T, H, d] view: element (b, t, h, c) at ptr[b*sb + t*st + h*sh + c].
// sh == 0 shares one [B, T, d] sequence between all heads.
struct StridedSeq {
  void* ptr = nullptr;
  int64_t sb = 0, st = 0, sh = 0;
};

// One attention problem: O = softmax(scale * Q K^T, keys j < len[b]) V per
// (batch item b, head h), with dropout on the probabilities.
struct AttentionProblem {
  int pathway = 0;              // Philox stream and error messages
  int64_t batch = 0, heads = 0, tq = 0, tk = 0, dk = 0, dv = 0;
  double scale = 1.0;
  StridedSeq q, k, v, o;        // o: written (fully masked rows -> 0)
  const int64_t* key_len = nullptr;  // [B], validated: 0 <= len <= tk (CUDA kernels clamp too)
  void* lse = nullptr;          // [B, H, tq] accumulation dtype (+inf where fully masked)
  void* psum = nullptr;         // optional [B, H, tq]: sum_j of the dropped-out probabilities
  // Backward only.
  StridedSeq dout, dq, dk_out, dv_out;  // dk_out/dv_out: [B, tk, H, d]; with shared K=V (k.sh == 0)
                                        // dk_out receives dK + dV summed over heads, dv_out unused,
                                        // and is ADDED to (+=): shared-K problems writing the same
                                        // dk_out run one after another in one task per item (CPU);
                                        // on CUDA one CTA per key block sums all of them and adds once
  const void* dpsum = nullptr;  // optional [B, H, tq]: gradient of psum
};

// Where the kernels take the Philox seed and offset from: values known on the
// host, or memory the kernels read (the device memory of a CUDA generator
// under graph capture, or of the `rng` tensor the forward saved), so a
// captured graph draws new masks on every replay and no call reads the
// device from the host. seed = *seed_ptr if set, offset = *offset_ptr +
// offset_add if set; only the low 32 bits of the offset are used.
struct RngSource {
  uint64_t seed = 0, offset = 0;
  const int64_t* seed_ptr = nullptr;
  const int64_t* offset_ptr = nullptr;
  uint64_t offset_add = 0;
};

// The (seed, offset) of a source (reads its pointers: device memory on a GPU).
MF_HOST_DEVICE void resolve(const RngSource& r, uint64_t& seed, uint64_t& offset) {
  seed = r.seed_ptr ? static_cast<uint64_t>(*r.seed_ptr) : r.seed;
  offset = r.offset_ptr ? static_cast<uint64_t>(*r.offset_ptr) + r.offset_add : r.offset;
}

MF_HOST_DEVICE Philox philox_of(const RngSource& r) {
  uint64_t seed, offset;
  resolve(r, seed, offset);
  return philox_of(seed, offset);
}

// Stores (seed, offset) of a source as int64 [2] (the `rng` the backward reads).
MF_HOST_DEVICE void store_rng(const RngSource& r, int64_t* out) {
  uint64_t seed, offset;
  resolve(r, seed, offset);
  out[0] = static_cast<int64_t>(seed);
  out[1] = static_cast<int64_t>(offset);
}

struct DropoutParams {
  double p = 0.0;  // 0: off
  RngSource rng;
};

// Residual + /3 + dropout + LayerNorm of one modality (see the kernel for the formula).
struct CombineModality {
  int modality = 0;
  int64_t batch = 0, t = 0, d = 0;
  const void* x = nullptr;          // [B, T, D] contiguous, the residual
  const void* rows = nullptr;       // optional [B*T, D] contiguous: out_proj of row pathways
  // Key-length-1 pathways where this modality queries: per item and head the
  // out_proj of that head's value, [B, heads, D] contiguous (heads == 1 when
  // attention dropout is off: all heads summed); their out_proj bias is `bias`.
  struct ItemTerm {
    int pathway = 0;
    const void* c = nullptr;
    int64_t heads = 1;
    const int64_t* key_len = nullptr;  // [B], 0 or 1
    const void* bias = nullptr;        // [D]
  };
  std::vector<ItemTerm> items;
  void* u = nullptr;          // [B, T, D] the LayerNorm input (saved for the backward)
  void* stats = nullptr;      // [B*T, 2] accumulation dtype: mean, rstd
  void* y = nullptr;          // [B, T, D] output
  // Backward only.
  const void* grad_y = nullptr;  // [B, T, D]
  void* grad_sum = nullptr;      // [B*T, D] gradient of the pre-/3 sum (= of x, of rows)
  std::vector<void*> grad_c;     // per item term: [B, heads, D]
  void* grad_bias_rows = nullptr;  // [D] accumulation dtype: sum over rows of grad_sum
};

struct CombineParams {
  std::array<CombineModality, kNumModalities> m;
  const void* ln_weight = nullptr;  // [D]
  const void* ln_bias = nullptr;    // [D]
  double eps = 1e-5;
  DropoutParams attn_dropout, out_dropout;
  // Forward, when dropout is on: the kernel stores the (seed, offset) of the
  // dropouts' source (out_dropout.rng, the same as attn_dropout.rng) here,
  // int64 [2], for the backward.
  int64_t* rng_out = nullptr;
  // Backward: [D] accumulation dtype.
  void* grad_ln_weight = nullptr;
  void* grad_ln_bias = nullptr;
};

}  // namespace maven_fast::cross_modal
