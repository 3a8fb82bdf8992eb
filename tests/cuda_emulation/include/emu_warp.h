// Warp-collective and asynchronous-copy instructions for the CPU emulator:
// __shfl_*_sync, mma.sync m16n8k16 (bf16/f16 in, f32 accumulate), ldmatrix
// x1/x2/x4 [.trans] and cp.async (16 bytes, commit groups, wait_group), with
// the names of csrc/common/warp_mma.cuh. Fragment layouts: csrc/common/mma_layout.h
// (checked against CuTe's MMA traits by tests/test_cuda_emulation_primitives.py).
//
// Rules enforced, as the hardware imposes them (a violation reports a failed
// launch, like a device-side error):
//   - every lane of the warp takes part in a collective (.sync.aligned; full
//     shuffle masks only): a lane that exited or skipped it is an error;
//   - ldmatrix rows and cp.async destinations lie in dynamic shared memory and
//     are 16-byte aligned; cp.async sources are 16-byte aligned;
//   - cp.async copies land only when the issuing thread waits for their group
//     (cp_async_wait<N>): the emulator performs them then, so a read before the
//     wait (or before the barrier that follows it, for other threads' copies)
//     sees the buffer's previous contents (NaN-filled at launch).
#pragma once

#include <deque>

#include "cuda_bf16.h"
#include "cuda_fp16.h"

#include "common/mma_layout.h"

inline thread_local int emu_collective_count = 0;  // collectives this (emulated) thread ran

inline void emu_fail(const char* fmt, const char* what, int a, int b) {
  std::fprintf(stderr, fmt, what, a, b);
  emu_trapped = 1;
}

// Runs one warp-collective: every lane writes its inputs (fill) into the slot
// of this collective's parity, all lanes meet at the warp barrier, each
// computes its outputs from everyone's inputs (compute). One barrier per
// collective is enough with two slots: a lane can write the other slot for the
// next collective while slower lanes still read this one, and cannot come back
// to this slot before every lane has arrived at the next barrier, i.e. finished
// reading. The arrival counters only grow: after its k-th use of a slot every
// lane expects 32 (k + 1) arrivals there.
template <typename Fill, typename Compute>
inline void emu_warp_collective(const char* what, Fill fill, Compute compute) {
  const int t = threadIdx.x, w = t / 32, lane = t % 32;
  EmuWarpExchange& X = *emu_block->wx[w];
  std::barrier<>& bar = *emu_block->warp[w];
  const int parity = emu_collective_count & 1, use = emu_collective_count >> 1;
  ++emu_collective_count;
  EmuWarpSlot& S = X.slot[parity];
  fill(S, lane);
  X.arrived[parity].fetch_add(1);
  bar.arrive_and_wait();
  const int n = X.arrived[parity].load() - 32 * use;
  if (n != 32 && lane == 0) emu_fail("emu: %s executed by %d of the 32 lanes of warp %d\n", what, n, w);
  compute(S, lane);
}

// ---------------------------------------------------------------- shuffles
template <typename V>
inline V emu_shuffle(const char* what, unsigned mask, V v, int (*src)(int lane, int arg), int arg) {
  if (mask != 0xffffffffu) emu_fail("emu: %s with a partial mask (lane %d, warp %d)\n", what, threadIdx.x % 32,
                                    threadIdx.x / 32);
  V out{};
  emu_warp_collective(what, [&](EmuWarpSlot& X, int lane) { X.d[lane] = static_cast<double>(v); },
                      [&](EmuWarpSlot& X, int lane) { out = static_cast<V>(X.d[src(lane, arg)]); });
  return out;
}
template <typename V> inline V __shfl_xor_sync(unsigned mask, V v, int o) {
  return emu_shuffle("__shfl_xor_sync", mask, v, [](int l, int a) { return l ^ a; }, o);
}
template <typename V> inline V __shfl_sync(unsigned mask, V v, int src) {
  return emu_shuffle("__shfl_sync", mask, v, [](int, int a) { return a & 31; }, src);
}
template <typename V> inline V __shfl_down_sync(unsigned mask, V v, int d) {
  return emu_shuffle("__shfl_down_sync", mask, v, [](int l, int a) { return l + a < 32 ? l + a : l; }, d);
}
template <typename V> inline V __shfl_up_sync(unsigned mask, V v, int d) {
  return emu_shuffle("__shfl_up_sync", mask, v, [](int l, int a) { return l - a >= 0 ? l - a : l; }, d);
}

// ---------------------------------------------------------------- memory checks
inline bool emu_in_dyn_smem(const void* p, size_t bytes) {
  const auto* c = static_cast<const unsigned char*>(p);
  return c >= emu_dyn_smem_buf.data() && c + bytes <= emu_dyn_smem_buf.data() + emu_dyn_smem_buf.size();
}
inline bool emu_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

namespace maven_fast::cuda::mma {

// ---------------------------------------------------------------- mma.sync
inline float emu_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float emu_to_float(__half v) { return __half2float(v); }

template <typename T>
inline float emu_half_of(uint32_t reg, int h) {
  T v;
  const uint16_t bits = static_cast<uint16_t>(h ? reg >> 16 : reg & 0xffffu);
  std::memcpy(&v, &bits, 2);
  return emu_to_float(v);
}

// D = A B + C for the warp's 16 x 16 A and 16 x 8 B; products exact, the sum
// of each output in double and rounded once (hardware: fp32 with an
// unspecified order; the tests' tolerances cover both).
template <typename T>
inline void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emu_warp_collective(
      "mma.sync.m16n8k16",
      [&](EmuWarpSlot& X, int lane) {
        for (int r = 0; r < 4; ++r) X.u[lane][r] = a[r];
        for (int r = 0; r < 2; ++r) X.u[lane][4 + r] = b[r];
        for (int v = 0; v < 4; ++v) X.f[lane][v] = d[v];
      },
      [&](EmuWarpSlot& X, int lane) {
        float A[16][16], B[16][8];
        for (int l = 0; l < 32; ++l) {
          for (int v = 0; v < 8; ++v) {
            const maven_fast::mma::Coord c = maven_fast::mma::a_coord(l, v);
            A[c.row][c.col] = emu_half_of<T>(X.u[l][v / 2], v % 2);
          }
          for (int v = 0; v < 4; ++v) {
            const maven_fast::mma::Coord c = maven_fast::mma::b_coord(l, v);
            B[c.row][c.col] = emu_half_of<T>(X.u[l][4 + v / 2], v % 2);
          }
        }
        for (int v = 0; v < 4; ++v) {
          const maven_fast::mma::Coord c = maven_fast::mma::c_coord(lane, v);
          double s = X.f[lane][v];
          for (int k = 0; k < 16; ++k) s += static_cast<double>(A[c.row][k]) * B[k][c.col];
          d[v] = static_cast<float>(s);
        }
      });
}

// ---------------------------------------------------------------- ldmatrix
template <int N, bool Trans>
inline void emu_ldmatrix(uint32_t* r, const void* row) {
  emu_warp_collective(
      Trans ? "ldmatrix.trans" : "ldmatrix",
      [&](EmuWarpSlot& X, int lane) { X.p[lane] = row; },
      [&](EmuWarpSlot& X, int lane) {
        if (lane == 0) {
          for (int l = 0; l < 8 * N; ++l)
            if (!emu_in_dyn_smem(X.p[l], 16) || !emu_aligned16(X.p[l]))
              emu_fail("emu: %s row address of lane %d is not 16-byte aligned shared memory (%d)\n",
                       "ldmatrix", l, 0);
        }
        for (int m = 0; m < N; ++m) {
          uint32_t out = 0;
          for (int h = 0; h < 2; ++h) {
            const maven_fast::mma::Coord c = maven_fast::mma::ldmatrix_coord(lane, h, Trans);
            const void* p = X.p[8 * m + c.row];
            uint16_t v = 0;
            if (emu_in_dyn_smem(p, 16)) std::memcpy(&v, static_cast<const unsigned char*>(p) + 2 * c.col, 2);
            out |= static_cast<uint32_t>(v) << (16 * h);
          }
          r[m] = out;
        }
      });
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { emu_ldmatrix<4, false>(r, row); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { emu_ldmatrix<4, true>(r, row); }
inline void ldmatrix_x2(uint32_t (&r)[2], const void* row) { emu_ldmatrix<2, false>(r, row); }
inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) { emu_ldmatrix<2, true>(r, row); }
inline void ldmatrix_x1(uint32_t& r, const void* row) { emu_ldmatrix<1, false>(&r, row); }
inline void ldmatrix_x1_trans(uint32_t& r, const void* row) { emu_ldmatrix<1, true>(&r, row); }

// ---------------------------------------------------------------- cp.async
struct EmuCopy {
  void* dst;
  const void* src;  // null: zero-fill
};
inline thread_local std::vector<EmuCopy> emu_uncommitted;
inline thread_local std::deque<std::vector<EmuCopy>> emu_groups;

inline void cp_async_16(void* dst, const void* src, bool full) {
  if (!emu_in_dyn_smem(dst, 16) || !emu_aligned16(dst) || (full && !emu_aligned16(src)))
    emu_fail("emu: %s of thread %d: misaligned or not in shared memory (%d)\n", "cp.async",
             static_cast<int>(threadIdx.x), 0);
  emu_uncommitted.push_back({dst, full ? src : nullptr});
}
inline void cp_async_commit() {
  emu_groups.push_back(std::move(emu_uncommitted));
  emu_uncommitted.clear();
}
template <int N>
inline void cp_async_wait() {
  while (static_cast<int>(emu_groups.size()) > N) {
    for (const EmuCopy& c : emu_groups.front()) {
      if (!emu_in_dyn_smem(c.dst, 16)) continue;
      if (c.src) std::memcpy(c.dst, c.src, 16);
      else std::memset(c.dst, 0, 16);
    }
    emu_groups.pop_front();
  }
}

}  // namespace maven_fast::cuda::mma
