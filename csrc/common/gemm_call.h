// One GEMM of the ops' orchestration: out = beta * out + alpha * a @ b (+ bias
// on every row), beta 0 or 1, as at::addmm_out (`out` may be a column slice of
// a wider matrix).
#pragma once

#include <ATen/core/Tensor.h>

namespace maven_fast {

struct GemmCall {
  at::Tensor out, a, b, bias;
  double beta = 0.0, alpha = 1.0;
};

// ATen's execution of one call (any device).
void aten_gemm(const GemmCall& c);

}  // namespace maven_fast
