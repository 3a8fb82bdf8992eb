// Host side of the bf16 GEMMs (bf16_gemm.h): where they run and which calls they take.
#include "common/bf16_gemm.h"

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

}  // namespace

bool bf16_gemm_available() {
  static const bool available = [] {
    return gemm_kernels_enabled("MAVEN_FAST_CPU_BF16_GEMM") && cpu_capability() == CpuCapability::AVX512_BF16 &&
           !cpu_has_amx_bf16();
  }();
  return available;
}

bool bf16_gemm_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                       double alpha, const at::Tensor& bias, Bf16Gemm& p) {
  return bf16_gemm_available() && gemm_problem(out, a, b, beta, alpha, bias, p);
}

void bf16_gemm_group(const std::vector<Bf16Gemm>& problems) {
  if (problems.empty()) return;
  MAVEN_FAST_CPU_DISPATCH(bf16_gemm_cpu_kernel, problems);
}

}  // namespace maven_fast
