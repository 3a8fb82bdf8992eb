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

struct DropoutParams {
  double p = 0.0;       // 0: off
  uint64_t seed = 0;
  uint32_t offset = 0;
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
  // Backward: [D] accumulation dtype.
  void* grad_ln_weight = nullptr;
  void* grad_ln_bias = nullptr;
};

}  // namespace maven_fast::cross_modal
