// Host side of the bf16 GEMMs (bf16_gemm.h): where they run and which calls they take.
#include "common/bf16_gemm.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace maven_fast {
namespace {

bool cpu_has_amx_bf16() {
#if defined(__x86_64__) || defined(_M_X64)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  return (edx >> 22) & 1u;  // CPUID.(EAX=7, ECX=0):EDX[22] AMX-BF16
#else
  return false;
#endif
}

bool unit_stride(const at::Tensor& t, int64_t dim) { return t.size(dim) == 1 || t.stride(dim) == 1; }

bool is_cpu_bf16(const at::Tensor& t) { return t.is_cpu() && t.scalar_type() == at::kBFloat16; }

}  // namespace

bool bf16_gemm_available() {
  static const bool available = [] {
    const char* env = std::getenv("MAVEN_FAST_CPU_BF16_GEMM");
    if (env && std::string(env) == "0") return false;
    return cpu_capability() == CpuCapability::AVX512_BF16 && !cpu_has_amx_bf16();
  }();
  return available;
}

bool bf16_gemm_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                       double alpha, const at::Tensor& bias, Bf16Gemm& p) {
  if (!bf16_gemm_available()) return false;
  if (out.dim() != 2 || a.dim() != 2 || b.dim() != 2) return false;
  if (!is_cpu_bf16(out) || !is_cpu_bf16(a) || !is_cpu_bf16(b)) return false;
  if (beta != 0.0 && beta != 1.0) return false;
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0 || k == 0 || b.size(0) != k || out.size(0) != m || out.size(1) != n) return false;
  if (!unit_stride(out, 1) || !(unit_stride(a, 1) || unit_stride(a, 0)) || !(unit_stride(b, 1) || unit_stride(b, 0)))
    return false;
  if (bias.defined() && (beta != 0.0 || bias.dim() != 1 || bias.size(0) != n || !unit_stride(bias, 0) ||
                         !is_cpu_bf16(bias)))
    return false;
  p = Bf16Gemm{};
  p.m = m;
  p.n = n;
  p.k = k;
  p.a = a.const_data_ptr<c10::BFloat16>();
  p.a_transposed = !unit_stride(a, 1);
  p.lda = p.a_transposed ? a.stride(1) : a.stride(0);
  p.b = b.const_data_ptr<c10::BFloat16>();
  p.b_transposed = !unit_stride(b, 1);
  p.ldb = p.b_transposed ? b.stride(1) : b.stride(0);
  p.c = out.data_ptr<c10::BFloat16>();
  p.ldc = out.stride(0);
  p.bias = bias.defined() ? bias.const_data_ptr<c10::BFloat16>() : nullptr;
  p.alpha = static_cast<float>(alpha);
  p.accumulate = beta != 0.0;
  return true;
}

void bf16_gemm_group(const std::vector<Bf16Gemm>& problems) {
  if (problems.empty()) return;
  MAVEN_FAST_CPU_DISPATCH(bf16_gemm_cpu_kernel, problems);
}

}  // namespace maven_fast
