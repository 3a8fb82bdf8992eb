// bf16 GEMMs on AVX512-BF16 CPUs without AMX: the large products of the CPU
// cross-modal block (its projections, [512-1600] x 512 x [512-1600] at the
// paper's shapes) on the vdpbf16ps register tiles of micro_gemm_bf16.h.
//
// Why not ATen: torch's bf16 matmul (oneDNN brgemm) reaches ~95% of a core's
// vdpbf16ps rate on one thread, but at these shapes on two threads, one call at
// a time, 88-92% (addmm with a bias: the bias is copied into C first and
// summed in), and 83% inside the block. These kernels run every product of a
// batch in one parallel region, split evenly by work, with the bias, alpha and
// accumulation in the tile's epilogue. With AMX, oneDNN's tile GEMMs are
// several times faster: then ATen keeps them (bf16_gemm_available).
//
//   C [m, n] (=|+=) alpha * A [m, k] B [k, n] (+ bias [n] on every row)
//   (gemm_problem.h's layouts), bf16 everywhere, fp32 accumulation, one
//   rounding per output element (as ATen's bf16 GEMM).
//
// Operands are repacked as bf16 pairs along k (micro_gemm_bf16.h's layout): B
// into 64-column panels, A only when its rows are not already pairs (A^T, an
// odd k, an odd leading dimension). Problems of one call must not write
// overlapping C, nor read C that another writes.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "common/cpu_capability.h"
#include "common/gemm_problem.h"

namespace maven_fast {

using Bf16Gemm = GemmProblem<c10::BFloat16>;

// True when these kernels run here: the AVX512_BF16 capability (not forced
// lower by MAVEN_FAST_CPU_CAPABILITY), no AMX-BF16, and not turned off by
// MAVEN_FAST_CPU_BF16_GEMM=0 (then ATen runs these products).
bool bf16_gemm_available();

// The problem for out = beta * out + alpha * a @ b (+ bias), beta 0 or 1, or
// false when these kernels do not take it (not available, not bf16 on the CPU,
// no unit stride in an operand, out not row-major).
bool bf16_gemm_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                       double alpha, const at::Tensor& bias, Bf16Gemm& p);

// Runs independent problems in one parallel region (call only when available).
void bf16_gemm_group(const std::vector<Bf16Gemm>& problems);

}  // namespace maven_fast

MAVEN_FAST_DECLARE_CPU_KERNEL(void bf16_gemm_cpu_kernel(const std::vector<maven_fast::Bf16Gemm>& problems))
