// Launch interface between the torch-facing host glue (cross_modal_cuda.cpp)
// and the device code of the cross-modal block (cross_modal_attention_kernel.cu,
// cross_modal_combine_kernel.cu). Plain C++ and CUDA runtime types only: the
// .cu files never include torch headers.
//
// The launchers take the same descriptors as the CPU kernels
// (cross_modal_descriptors.h) with device pointers, enqueue their kernels on
// `stream` and return the first launch error together with the name of the
// kernel that failed. Arguments the kernels cannot take (more than
// kMaxProblems problems, sizes beyond int32, ...) are reported the same way
// with cudaErrorInvalidValue and a `what` naming the limit; the host glue
// checks the documented limits first, so that only happens on misuse.
// Only F32, F16 and BF16 are implemented (accumulation in fp32; lse, psum,
// dpsum, stats and the reduction outputs are fp32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/cuda_dtype.h"
#include "cross_modal/cross_modal_descriptors.h"

namespace maven_fast::cuda {

struct LaunchStatus {
  cudaError_t error = cudaSuccess;
  const char* kernel = "";  // the kernel (or the check) that failed
  bool ok() const { return error == cudaSuccess; }
};

// One attention launch holds at most this many problems (the six pathways).
constexpr int kCrossModalMaxProblems = 6;
// Item terms (key-length-1 pathways) per modality in one combine launch.
constexpr int kCrossModalMaxItems = 2;

// Workspace of the attention backward: fp32 D_i = <dO_i, O_i> + dpsum_i psum_i
// for every (problem, b, h, i), written by the dQ kernel, read by the dK/dV one.
size_t cross_modal_attention_backward_workspace_bytes(
    const std::vector<cross_modal::AttentionProblem>& problems);

LaunchStatus cross_modal_attention_forward(DType dtype,
                                           const std::vector<cross_modal::AttentionProblem>& problems,
                                           const cross_modal::DropoutParams& dropout,
                                           cudaStream_t stream);

// `workspace`: cross_modal_attention_backward_workspace_bytes(problems) bytes,
// 16-byte aligned, contents irrelevant.
LaunchStatus cross_modal_attention_backward(DType dtype,
                                            const std::vector<cross_modal::AttentionProblem>& problems,
                                            const cross_modal::DropoutParams& dropout,
                                            void* workspace, cudaStream_t stream);

// Which attention kernels the launchers above use (cross_modal_attention_dispatch.cu):
// kAuto, the default: the tensor-core kernels (cross_modal_attention_tc_kernel.cu)
// for every problem they take (cross_modal_attention_tc_eligible: bf16/fp16,
// own K and V per head, head dim <= 256 and a multiple of 8, 16-byte aligned
// rows), the SIMT kernels for the rest, in a second launch; kSimt: the SIMT
// kernels for everything (benchmarks and tests compare the two).
enum class AttentionKernels { kAuto = 0, kSimt = 1 };
void set_cross_modal_attention_kernels(AttentionKernels kind);
AttentionKernels cross_modal_attention_kernels();

// The two kernel families behind the launchers (same contracts as those).
bool cross_modal_attention_tc_eligible(DType dtype, const cross_modal::AttentionProblem& problem);
LaunchStatus cross_modal_attention_tc_forward(DType dtype, const std::vector<cross_modal::AttentionProblem>& problems,
                                              const cross_modal::DropoutParams& dropout, cudaStream_t stream);
LaunchStatus cross_modal_attention_tc_backward(DType dtype, const std::vector<cross_modal::AttentionProblem>& problems,
                                               const cross_modal::DropoutParams& dropout, void* workspace,
                                               cudaStream_t stream);
LaunchStatus cross_modal_attention_simt_forward(DType dtype,
                                                const std::vector<cross_modal::AttentionProblem>& problems,
                                                const cross_modal::DropoutParams& dropout, cudaStream_t stream);
LaunchStatus cross_modal_attention_simt_backward(DType dtype,
                                                 const std::vector<cross_modal::AttentionProblem>& problems,
                                                 const cross_modal::DropoutParams& dropout, void* workspace,
                                                 cudaStream_t stream);

LaunchStatus cross_modal_combine_forward(DType dtype, const cross_modal::CombineParams& params,
                                         cudaStream_t stream);

// Workspace of the combine backward: fp32 per-(modality, item) partial sums of
// dgamma, dbeta, dbias_rows and the item-term gradients before rounding.
size_t cross_modal_combine_backward_workspace_bytes(const cross_modal::CombineParams& params);

LaunchStatus cross_modal_combine_backward(DType dtype, const cross_modal::CombineParams& params,
                                          void* workspace, cudaStream_t stream);

}  // namespace maven_fast::cuda
