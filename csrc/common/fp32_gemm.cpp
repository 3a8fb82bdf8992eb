// Host side of the fp32 GEMMs (fp32_gemm.h): where they run and which calls they take.
#include "common/fp32_gemm.h"

namespace maven_fast {

bool fp32_gemm_available() {
  static const bool available = [] {
    return gemm_kernels_enabled("MAVEN_FAST_CPU_FP32_GEMM") && cpu_capability() == CpuCapability::AVX2;
  }();
  return available;
}

bool fp32_gemm_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                       double alpha, const at::Tensor& bias, Fp32Gemm& p) {
  return fp32_gemm_available() && gemm_problem(out, a, b, beta, alpha, bias, p);
}

void fp32_gemm_group(const std::vector<Fp32Gemm>& problems) {
  if (problems.empty()) return;
  MAVEN_FAST_CPU_DISPATCH(fp32_gemm_cpu_kernel, problems);
}

}  // namespace maven_fast
