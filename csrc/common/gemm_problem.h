// One product of the CPU GEMM kernels (bf16_gemm.h, fp32_gemm.h) as raw pointers:
//
//   C [m, n] (=|+=) alpha * A [m, k] B [k, n] (+ bias [n] on every row)
//   A: rows (A(i, p) = a[i * lda + p]) or transposed rows (A(i, p) = a[p * lda + i])
//   B: rows (B(p, j) = b[p * ldb + j]) or transposed rows (B(p, j) = b[j * ldb + p])
//   C: rows with leading dimension ldc.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace maven_fast {

template <typename T>
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  const T* a = nullptr;
  int64_t lda = 0;
  bool a_transposed = false;  // A(i, p) = a[p * lda + i]
  const T* b = nullptr;
  int64_t ldb = 0;
  bool b_transposed = false;  // B(p, j) = b[j * ldb + p] (B = W^T, W [n, k] rows)
  T* c = nullptr;
  int64_t ldc = 0;
  const T* bias = nullptr;  // [n] contiguous, or null
  float alpha = 1.0f;
  bool accumulate = false;  // C += ... (else C = ...)
};

// The problem for out = beta * out + alpha * a @ b (+ bias), beta 0 or 1, when
// every operand is a non-empty 2-D CPU tensor of T with a unit stride (out and
// the bias along their rows), the bias only with beta 0; else false.
// False when the environment variable `name` is "0" (a kernel family turned
// off, e.g. MAVEN_FAST_CPU_FP32_GEMM=0: ATen runs its products), else true.
bool gemm_kernels_enabled(const char* name);

template <typename T>
bool gemm_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta, double alpha,
                  const at::Tensor& bias, GemmProblem<T>& p);

}  // namespace maven_fast
