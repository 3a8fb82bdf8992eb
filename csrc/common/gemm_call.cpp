#include "common/gemm_call.h"

#include <ATen/ATen.h>

namespace maven_fast {

void aten_gemm(const GemmCall& c) {
  at::Tensor o = c.out;  // the _out functions take a non-const reference
  if (c.bias.defined()) {
    TORCH_INTERNAL_ASSERT(c.beta == 0.0, "aten_gemm: a bias takes the place of beta * out");
    at::addmm_out(o, c.bias, c.a, c.b, 1.0, c.alpha);
  } else if (c.beta != 0.0 || c.alpha != 1.0) {
    at::addmm_out(o, c.out, c.a, c.b, c.beta, c.alpha);
  } else {
    at::mm_out(o, c.a, c.b);
  }
}

}  // namespace maven_fast
