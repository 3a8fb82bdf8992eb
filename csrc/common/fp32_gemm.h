// fp32 GEMMs on AVX2 / AVX512 CPUs: a group of independent products of the CPU
// cross-modal block in one parallel region on the FMA register tiles of
// micro_gemm.h (6 rows x 16 columns on AVX2, 6 x 64 on AVX512).
//
// Why not ATen: MKL's sgemm runs one call at a time, each in its own parallel
// region, and inside the block at 93% of its square-matrix rate (2-core AVX2
// EPYC; the per-head products of absorbed pathways, [1024, 512] x [512, 256],
// at 85%). Here the group is split by equal work across threads, with bias,
// alpha and accumulation in the tile's epilogue.
//
//   C [m, n] (=|+=) alpha * A [m, k] B [k, n] (+ bias [n] on every row)
//   (gemm_problem.h's layouts), fp32 accumulation in k order.
//
// A is read in place (rows or A^T: the tiles broadcast its elements); B is
// packed into 64-column panels by the thread that uses them. Problems of one
// call must not write overlapping C, nor read C that another writes.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "common/cpu_capability.h"
#include "common/gemm_problem.h"

namespace maven_fast {

using Fp32Gemm = GemmProblem<float>;

// True when these kernels run here: an AVX2 CPU (capability AVX2 exactly; not
// forced lower by MAVEN_FAST_CPU_CAPABILITY), and not turned off by
// MAVEN_FAST_CPU_FP32_GEMM=0 (then ATen runs these products).
bool fp32_gemm_available();

// The problem for out = beta * out + alpha * a @ b (+ bias), beta 0 or 1, or
// false when these kernels do not take it (not available, not fp32 on the CPU,
// no unit stride in an operand, out not row-major).
bool fp32_gemm_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                       double alpha, const at::Tensor& bias, Fp32Gemm& p);

// Runs independent problems in one parallel region (call only when available).
void fp32_gemm_group(const std::vector<Fp32Gemm>& problems);

}  // namespace maven_fast

MAVEN_FAST_DECLARE_CPU_KERNEL(void fp32_gemm_cpu_kernel(const std::vector<maven_fast::Fp32Gemm>& problems))
