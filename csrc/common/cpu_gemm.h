// The CPU ops' one dispatch point for GEMMs: out = beta * out + alpha * a @ b
// (+ bias on every row), beta 0 or 1, as at::addmm_out (`out` may be a column
// slice of a wider matrix). Each call goes to the first of
//   1. the skinny kernels (skinny_gemm.h): one small dimension;
//   2. the bf16 kernels (bf16_gemm.h): bf16 on an AVX512-BF16 CPU without AMX;
//   3. the fp32 kernels (fp32_gemm.h): fp32 on an AVX2 CPU;
//   4. ATen (oneDNN / MKL).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "common/gemm_call.h"

namespace maven_fast {

// Independent calls (none reads another's output, no two write the same
// elements): the skinny ones in one parallel region, the bf16 ones in another,
// the fp32 ones in a third, the rest one ATen call each.
void cpu_gemm_group(const std::vector<GemmCall>& calls);

void cpu_gemm(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta, double alpha,
              const at::Tensor& bias);

}  // namespace maven_fast
