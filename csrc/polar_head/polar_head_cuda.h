// Launch interface between the torch-facing host code (polar_head_cuda.cpp)
// and the device code (polar_head_kernel.cu). Plain C++ and CUDA runtime types
// only: the .cu file never includes torch headers.
#pragma once

#include <cuda_runtime_api.h>
#include <cstddef>
#include <cstdint>

#include "common/cuda_dtype.h"

namespace maven_fast::cuda {

struct PolarHeadForwardArgs {
  const void* x;       // [n, d], row stride ldx, element stride 1
  int64_t ldx;
  const void* weight;  // [2, d]
  const void* bias;    // [2]
  const void* target;  // [n, 2] in the accumulation type, or nullptr
  const bool* mask;    // [n], or nullptr (all rows valid)
  int64_t n, d;
  bool bounded;
  void* valence_arousal;  // [n, 2]
  void* theta_intensity;  // [n, 2]
  void* loss;             // 0-dim, accumulation type
  void* n_valid;          // 0-dim, accumulation type
  void* workspace;        // polar_head_workspace_bytes(...) bytes
  unsigned int* counter;  // one zeroed counter (the last block to finish reduces)
};

struct PolarHeadBackwardArgs {
  const void* grad_va;    // [n, 2] or nullptr
  const void* grad_ti;    // [n, 2] or nullptr
  const void* grad_loss;  // 0-dim accumulation type, or nullptr
  const void* x;
  int64_t ldx;
  const void* weight;
  const void* bias;
  const void* target;
  const bool* mask;
  const void* n_valid;
  int64_t n, d;
  bool bounded;
  void* grad_x;       // [n, d] contiguous
  void* grad_weight;  // [2, d]
  void* grad_bias;    // [2]
  void* workspace;
  unsigned int* counter;
};

// Largest feature size the CUDA kernels accept.
constexpr int64_t kPolarHeadMaxD = 2048;

// Number of blocks a launch uses on a device with `sm_count` SMs, and the
// scratch memory it needs.
int polar_head_grid(int64_t n, int sm_count, bool backward);
size_t polar_head_workspace_bytes(int grid, int64_t d, DType dtype, bool backward);

cudaError_t polar_head_forward(DType dtype, const PolarHeadForwardArgs& args, int grid,
                               cudaStream_t stream);
cudaError_t polar_head_backward(DType dtype, const PolarHeadBackwardArgs& args, int grid,
                                cudaStream_t stream);

}  // namespace maven_fast::cuda
