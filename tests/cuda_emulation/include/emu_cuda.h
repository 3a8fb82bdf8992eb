// Minimal CPU emulation of the CUDA features maven_fast's kernels use, so
// their device code runs (slowly) on a machine without a GPU: one OS thread
// per CUDA thread, CTAs one after another (so `__shared__` can be a static),
// std::barrier for __syncthreads, warp-collective instructions (shuffles,
// mma.sync, ldmatrix) and cp.async in emu_warp.h, fp16/bf16 as 16-bit storage
// with round-to-nearest-even conversions.
// Threads that return early drop out of the barriers, as exited CUDA threads
// do. Not emulated: memory-model subtleties, warp-synchronous execution
// without __syncwarp (the kernels do not rely on it), launch limits.
// Testing only (tests/test_cross_modal_cuda_emulated.py).
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>
#include <atomic>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static
#ifndef __restrict__
#define __restrict__ __restrict
#endif

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct emu_uint3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local emu_uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

// What the lanes of one warp hand each other in a warp-collective instruction
// (shuffles, mma.sync, ldmatrix; see emu_warp.h).
struct EmuWarpSlot {
  uint32_t u[32][8];
  float f[32][4];
  double d[32];
  const void* p[32];
};
// Two slots used by alternate collectives, so one barrier per collective
// suffices (see emu_warp_collective).
struct EmuWarpExchange {
  EmuWarpSlot slot[2];
  std::atomic<int> arrived[2] = {0, 0};  // lanes that reached a collective of each slot, ever
};

struct EmuBlock {
  explicit EmuBlock(int n) : bar(n) {
    for (int w = 0; w < (n + 31) / 32; ++w) {
      warp.emplace_back(std::make_unique<std::barrier<>>(std::min(32, n - 32 * w)));
      wx.emplace_back(std::make_unique<EmuWarpExchange>());
    }
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<std::unique_ptr<EmuWarpExchange>> wx;
};
inline thread_local EmuBlock* emu_block = nullptr;
inline std::vector<unsigned char> emu_dyn_smem_buf;
inline std::atomic<long> emu_sync_count{0};

// A kernel's __trap() (device-side error): the emulated thread goes on (a
// real one would stop) and the launch reports cudaErrorLaunchFailure.
inline std::atomic<int> emu_trapped{0};
inline void __trap() { emu_trapped = 1; }

inline void __syncthreads() { emu_sync_count++; emu_block->bar.arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
template <typename T> inline T __ldcg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// Dynamic shared memory is filled with 0xFF bytes (NaN floats) per CTA, so
// reads of unwritten data show.
template <typename F, typename... A>
void emu_launch(F kernel, dim3 grid, dim3 block, size_t smem, void* /*stream*/, const A&... args) {
  if (grid.x == 0 || block.x == 0) { std::fprintf(stderr, "emu: empty launch\n"); std::abort(); }
  const int n = block.x;
  for (unsigned bx = 0; bx < grid.x; ++bx) {
    emu_dyn_smem_buf.assign(smem + 16, 0xFF);
    EmuBlock blk(n);
    std::vector<std::thread> ts;
    ts.reserve(n);
    for (int t = 0; t < n; ++t) {
      ts.emplace_back([&, t, bx] {
        threadIdx.x = t;
        blockIdx.x = bx;
        blockDim = block;
        gridDim = grid;
        emu_block = &blk;
        kernel(args...);
        blk.warp[t / 32]->arrive_and_drop();
        blk.bar.arrive_and_drop();
      });
    }
    for (auto& th : ts) th.join();
  }
}
template <typename T> inline T* emu_dyn_smem() { return reinterpret_cast<T*>(emu_dyn_smem_buf.data()); }

#include "emu_warp.h"
