// MF_HOST_DEVICE: a function of the math headers that both the CPU (C++) and
// the CUDA kernels call; no torch headers, so nvcc compiles it alone.
#pragma once

#if defined(__CUDACC__)
#define MF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MF_HOST_DEVICE inline
#endif
