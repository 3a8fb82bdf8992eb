#include "common/cpu_capability.h"

#include <cstdlib>
#include <cstring>

namespace maven_fast {

static CpuCapability detect() {
  CpuCapability best = CpuCapability::DEFAULT;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = CpuCapability::AVX2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    best = CpuCapability::AVX512;
  if (best == CpuCapability::AVX512 && __builtin_cpu_supports("avx512bf16")) best = CpuCapability::AVX512_BF16;
#endif
  if (const char* env = std::getenv("MAVEN_FAST_CPU_CAPABILITY")) {
    CpuCapability wanted = best;
    if (!std::strcmp(env, "DEFAULT")) wanted = CpuCapability::DEFAULT;
    else if (!std::strcmp(env, "AVX2")) wanted = CpuCapability::AVX2;
    else if (!std::strcmp(env, "AVX512")) wanted = CpuCapability::AVX512;
    else if (!std::strcmp(env, "AVX512_BF16")) wanted = CpuCapability::AVX512_BF16;
    // Never go above what the processor supports.
    if (static_cast<int>(wanted) < static_cast<int>(best)) best = wanted;
  }
  return best;
}

CpuCapability cpu_capability() {
  static const CpuCapability c = detect();
  return c;
}

const char* cpu_capability_name(CpuCapability c) {
  switch (c) {
    case CpuCapability::AVX512_BF16: return "AVX512_BF16";
    case CpuCapability::AVX512: return "AVX512";
    case CpuCapability::AVX2: return "AVX2";
    default: return "DEFAULT";
  }
}

}  // namespace maven_fast
