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
}
