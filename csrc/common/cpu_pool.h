// A caching allocator for the buffers and outputs of the CPU ops.
//
// Why: a fresh CPU tensor of more than a few hundred KB comes from the C
// library's allocator, which hands large blocks back to the kernel when they
// are freed (mmap'd blocks, and heap top trims); the next allocation of the
// same size then takes one page fault per 4 KB page on first touch, and the
// kernel zeroes every page. The cross-modal block's backward returns ~25 MB
// of weight gradients per call at D = 512; measured on the 2-core EPYC, its
// forward+backward at reference_mlp shapes took ~3200 page faults per call
// (~1.5 us each, about a third of the call). Blocks from this pool are kept
// (already faulted in) when their tensor is freed and reused by the next call
// of the same shapes, as PyTorch's CUDA caching allocator does on the GPU.
//
// Requests under 256 KiB go to at::empty (the heap serves those without
// faults). A freed block is cached while the pool holds at most `limit` bytes
// (default 512 MiB; environment variable MAVEN_FAST_CPU_POOL_MB, 0 turns the
// pool off), otherwise returned to the system. Tensors are ordinary CPU tensors
// (resizable storage, simple data pointer); the pool outlives every tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace maven_fast {

// Like at::empty(sizes, opts) (contiguous); CPU tensors of >= 256 KiB come
// from the pool, everything else from at::empty.
at::Tensor cpu_pool_empty(at::IntArrayRef sizes, const at::TensorOptions& opts);

// A 1-D scratch buffer of `numel` elements for a kernel's packed operands,
// alive while the tensor is: one block shared by all calls, grown to the
// largest request and kept (its pages stay faulted in), so the packed
// operands of many GEMM groups take the largest group's memory. From the pool
// they took a cached block per size, up to the pool's limit (+300 MiB peak
// RSS on the (256, 400, 64) block). A request while another call holds the
// block (another thread) gets a buffer of its own from the pool.
at::Tensor cpu_pool_scratch(int64_t numel, const at::TensorOptions& opts);

struct CpuPoolInfo {
  int64_t cached_bytes = 0;  // free blocks held for reuse
  int64_t in_use_bytes = 0;  // blocks owned by live tensors
  int64_t limit_bytes = 0;   // most bytes cached
  int64_t hits = 0;          // requests served from the cache
  int64_t misses = 0;        // requests that allocated
};

CpuPoolInfo cpu_pool_info();
// Returns every cached block to the system (live tensors keep theirs).
void cpu_pool_release();
// Sets the cache limit in bytes (0: no caching); frees cached blocks over it.
void cpu_pool_set_limit(int64_t bytes);

}  // namespace maven_fast
