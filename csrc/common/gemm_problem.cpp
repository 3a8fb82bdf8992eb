#include "common/gemm_problem.h"

#include <c10/util/BFloat16.h>

#include <cstdlib>
#include <string>

namespace maven_fast {
namespace {

bool unit_stride(const at::Tensor& t, int64_t dim) { return t.size(dim) == 1 || t.stride(dim) == 1; }

template <typename T>
bool cpu_of(const at::Tensor& t) {
  return t.is_cpu() && t.scalar_type() == c10::CppTypeToScalarType<T>::value;
}

}  // namespace

bool gemm_kernels_enabled(const char* name) {
  const char* env = std::getenv(name);
  return !(env && std::string(env) == "0");
}

template <typename T>
bool gemm_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta, double alpha,
                  const at::Tensor& bias, GemmProblem<T>& p) {
  if (out.dim() != 2 || a.dim() != 2 || b.dim() != 2) return false;
  if (!cpu_of<T>(out) || !cpu_of<T>(a) || !cpu_of<T>(b)) return false;
  if (beta != 0.0 && beta != 1.0) return false;
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0 || k == 0 || b.size(0) != k || out.size(0) != m || out.size(1) != n) return false;
  if (!unit_stride(out, 1) || !(unit_stride(a, 1) || unit_stride(a, 0)) || !(unit_stride(b, 1) || unit_stride(b, 0)))
    return false;
  if (bias.defined() &&
      (beta != 0.0 || bias.dim() != 1 || bias.size(0) != n || !unit_stride(bias, 0) || !cpu_of<T>(bias)))
    return false;
  p = GemmProblem<T>{};
  p.m = m;
  p.n = n;
  p.k = k;
  p.a = a.const_data_ptr<T>();
  p.a_transposed = !unit_stride(a, 1);
  p.lda = p.a_transposed ? a.stride(1) : a.stride(0);
  p.b = b.const_data_ptr<T>();
  p.b_transposed = !unit_stride(b, 1);
  p.ldb = p.b_transposed ? b.stride(1) : b.stride(0);
  p.c = out.data_ptr<T>();
  p.ldc = out.stride(0);
  p.bias = bias.defined() ? bias.const_data_ptr<T>() : nullptr;
  p.alpha = static_cast<float>(alpha);
  p.accumulate = beta != 0.0;
  return true;
}

template bool gemm_problem<float>(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                  const at::Tensor&, GemmProblem<float>&);
template bool gemm_problem<c10::BFloat16>(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                          const at::Tensor&, GemmProblem<c10::BFloat16>&);

}  // namespace maven_fast
