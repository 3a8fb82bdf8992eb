// GEMMs with one small dimension (at most kSkinnyMax), the shapes of a
// projection of a few rows: at B = 16 with pooled audio and text, every GEMM of
// the cross-modal block multiplies 16 rows by a [512, 512] weight. A BLAS call
// runs these at ~60% of one core's FMA rate and does not split them across
// threads (measured on the 2-core EPYC: 140 us for 16 x 512 x 512 with 1 or 2
// threads); these kernels stream the weight once, split it across threads by
// rows or columns, and run several problems in one parallel region.
//
// C [m, n] (=|+=) alpha * A [m, k] B [k, n] (+ bias [n] on every row); three
// layouts (row-major = unit stride along the second index, any leading dimension):
//   kNT: A row-major, B^T row-major (B = W^T, W [n, k] the nn.Linear weight); m small
//        (forward projection y = x W^T + b)
//   kNN: A row-major, B row-major (B = W [k, n]); m small     (input gradient dx = dy W)
//   kTN: A^T row-major (A = G^T, G [k, m]), B row-major; k small
//        (weight gradient dW = dy^T x, a rank-k update)
// Inputs and C share one dtype (float, bfloat16 or half; accumulation in float).
// Problems of one call must not write overlapping C (they run concurrently).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "common/cpu_capability.h"

namespace maven_fast {

constexpr int64_t kSkinnyMax = 64;

enum class SkinnyKind : int { kNT = 0, kNN = 1, kTN = 2 };

struct SkinnyGemm {
  SkinnyKind kind = SkinnyKind::kNT;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* c = nullptr;
  int64_t ldc = 0;
  const void* bias = nullptr;  // [n] or null
  float alpha = 1.0f;
  bool accumulate = false;     // C += ... (else C = ...)
};

// The problem for out = beta * out + alpha * a @ b (+ bias) (cpu_gemm.h), or
// false when the skinny kernels do not take it.
bool skinny_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                    double alpha, const at::Tensor& bias, SkinnyGemm& p);

// Runs several independent problems (same dtype) in one parallel region.
void skinny_gemm_group(at::ScalarType dtype, const std::vector<SkinnyGemm>& problems);

}  // namespace maven_fast

MAVEN_FAST_DECLARE_CPU_KERNEL(void skinny_gemm_cpu_kernel(
    at::ScalarType dtype, const std::vector<maven_fast::SkinnyGemm>& problems))
