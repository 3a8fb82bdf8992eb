// Which CPU instruction set the vectorised CPU kernels run with.
//
// Every CPU kernel source is compiled once per capability (see
// cmake/cpu_capabilities.cmake) into namespace maven_fast::cpu_<CAP>;
// MAVEN_FAST_CPU_DISPATCH calls the best one this processor supports.
// AVX512_BF16 runs the AVX512 build, whose kernels then also use the
// AVX512-BF16 dot products (vdpbf16ps) for bf16 inputs (common/micro_gemm_bf16.h).
// Set MAVEN_FAST_CPU_CAPABILITY=DEFAULT|AVX2|AVX512|AVX512_BF16 to force a lower one.
#pragma once

namespace maven_fast {

enum class CpuCapability { DEFAULT = 0, AVX2 = 1, AVX512 = 2, AVX512_BF16 = 3 };

CpuCapability cpu_capability();
const char* cpu_capability_name(CpuCapability c);

}  // namespace maven_fast

#define MAVEN_FAST_CPU_DISPATCH(fn, ...)                              \
  do {                                                                \
    switch (::maven_fast::cpu_capability()) {                         \
      case ::maven_fast::CpuCapability::AVX512_BF16:                  \
      case ::maven_fast::CpuCapability::AVX512:                       \
        ::maven_fast::cpu_AVX512::fn(__VA_ARGS__);                    \
        break;                                                        \
      case ::maven_fast::CpuCapability::AVX2:                         \
        ::maven_fast::cpu_AVX2::fn(__VA_ARGS__);                      \
        break;                                                        \
      default:                                                        \
        ::maven_fast::cpu_DEFAULT::fn(__VA_ARGS__);                   \
    }                                                                 \
  } while (0)

// Declares `decl` in each capability namespace.
#define MAVEN_FAST_DECLARE_CPU_KERNEL(decl) \
  namespace maven_fast {                    \
  namespace cpu_DEFAULT { decl; }           \
  namespace cpu_AVX2 { decl; }              \
  namespace cpu_AVX512 { decl; }            \
  }
