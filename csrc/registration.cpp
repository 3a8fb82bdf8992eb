// The schemas of every maven_fast op, in one place. Implementations register
// per device in their own files (TORCH_LIBRARY_IMPL); fake (meta) kernels and
// autograd formulas are registered from Python (maven_fast/ops/).
#include <torch/library.h>

TORCH_LIBRARY(maven_fast, m) {
  // Polar head (SPEC 3.2): x [N, D], weight [2, D], bias [2] ->
  //   (valence_arousal [N, 2], theta_intensity [N, 2], loss [], n_valid []).
  // loss is the masked MSE against target [N, 2] over rows where mask [N] is
  // True (0 when no target is given or no row is valid).
  m.def(
      "polar_head(Tensor x, Tensor weight, Tensor bias, Tensor? target, Tensor? mask, "
      "bool bounded) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "polar_head_backward(Tensor? grad_valence_arousal, Tensor? grad_theta_intensity, "
      "Tensor? grad_loss, Tensor x, Tensor weight, Tensor bias, Tensor? target, Tensor? mask, "
      "Tensor n_valid, bool bounded) -> (Tensor, Tensor, Tensor)");

  // Six-pathway cross-modal block (SPEC 3.1; maven_fast/ops/cross_modal.py).
  // x_* [B, T_*, D] projected modality sequences, len_* [B] integer lengths
  // (keys j >= len are masked), the 6 pathways' nn.MultiheadAttention
  // parameters in the order v2a, v2t, a2v, a2t, t2v, t2a, the shared
  // LayerNorm, `modes` [6] (0 general, 1 key length 1, 2 weight absorption),
  // dropout probabilities (applied when `training`), rng = int64 [2]
  // (Philox seed, offset of the masks; None: drawn from the default generator
  // of the inputs' device, graph-safe on CUDA). Tagged nondeterministic_seeded
  // so compilers neither merge nor recompute calls (each draws new masks).
  // Returns (video_enh, audio_enh, text_enh, saved) where `saved` is what the
  // backward needs (layout: csrc/cross_modal/cross_modal.cpp; with dropout its
  // last entry is the rng the masks used).
  m.def(
      "cross_modal_block(Tensor x_v, Tensor x_a, Tensor x_t, Tensor len_v, Tensor len_a, "
      "Tensor len_t, Tensor[] in_proj_weight, Tensor[] in_proj_bias, Tensor[] out_proj_weight, "
      "Tensor[] out_proj_bias, Tensor ln_weight, Tensor ln_bias, float ln_eps, int num_heads, "
      "int[] modes, float attn_dropout_p, float dropout_p, bool training, Tensor? rng) "
      "-> (Tensor, Tensor, Tensor, Tensor[])",
      {at::Tag::nondeterministic_seeded});
  // Gradients [dx_v, dx_a, dx_t, d in_proj_weight x6, d in_proj_bias x6,
  // d out_proj_weight x6, d out_proj_bias x6, d ln_weight, d ln_bias].
  m.def(
      "cross_modal_block_backward(Tensor grad_v, Tensor grad_a, Tensor grad_t, Tensor x_v, "
      "Tensor x_a, Tensor x_t, Tensor len_v, Tensor len_a, Tensor len_t, Tensor[] in_proj_weight, "
      "Tensor[] in_proj_bias, Tensor[] out_proj_weight, Tensor[] out_proj_bias, Tensor ln_weight, "
      "Tensor ln_bias, float ln_eps, int num_heads, int[] modes, float attn_dropout_p, "
      "float dropout_p, bool training, Tensor[] saved) -> Tensor[]");

  // nn.Linear (maven_fast/ops/linear.py): y = x W^T + b, x [..., in_features],
  // weight [out_features, in_features], bias [out_features]; CPU only (on GPUs
  // the model's linear layers are torch's, cuBLAS). The backward returns
  // (dx, dW, db) where output_mask asks for them, an empty [0] tensor elsewhere.
  m.def("linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def("linear_backward(Tensor grad_out, Tensor x, Tensor weight, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // Dropout (maven_fast/ops/dropout.py): the scaled keep mask of like's shape
  // and dtype, mask_i = [Philox word of element i >= p 2^32] / (1 - p), from the
  // int64 `seed` (drawn by the caller from torch's generator, so torch.manual_seed
  // governs it); dropout(x) = x * mask. CPU only.
  m.def("dropout_mask(Tensor like, float p, Tensor seed) -> Tensor");

  // Test entry of the CPU ops' GEMM dispatch (csrc/common/cpu_gemm.h): in place,
  // out = beta * out + alpha * a @ b (+ bias on every row), beta 0 or 1, by
  // `kernel`: "any" (the dispatch), "skinny" or "bf16" (that kernel, else an
  // error), "aten".
  m.def(
      "_cpu_gemm_(Tensor(a!) out, Tensor a, Tensor b, float beta, float alpha, Tensor? bias, "
      "str kernel) -> ()");
}
