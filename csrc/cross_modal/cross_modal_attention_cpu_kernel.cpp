// CPU attention for all pathways of the cross-modal block in ONE
// at::parallel_for (compiled once per CPU capability).
//
// Forward, per pathway, batch item b, head h, query row i (keys j < len[b]):
//   s_ij = scale * <q_i, k_j>
//   m_i  = max_j s_ij,   l_i = sum_j exp(s_ij - m_i)            (online, fp32)
//   p_ij = exp(s_ij - m_i) / l_i,   p~_ij = p_ij z_ij / (1 - p_drop)  (z: Philox keep mask)
//   o_i  = sum_j p~_ij v_j,   lse_i = m_i + log l_i,   psum_i = sum_j p~_ij (optional)
//   len[b] = 0: o_i = 0, lse_i = +inf, psum_i = 0
// Backward (FlashAttention-2 form, P recomputed from lse, mask regenerated):
//   dP~_ij = <do_i, v_j> + dpsum_i,    dp_ij = dP~_ij z_ij / (1 - p_drop)
//   D_i    = <do_i, o_i> + dpsum_i psum_i   (= sum_j p_ij dp_ij)
//   ds_ij  = p_ij (dp_ij - D_i)
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p~_ij do_i
// Tasks (one at::parallel_for over all pathways): (pathway, b, h), or
// (pathway, b) when all heads share K = V (weight absorption), so every task
// owns the dK/dV rows it writes and packs K^T (and V^T) once for all its query
// blocks. Inputs of reduced precision are widened to fp32 once per task or
// block; all arithmetic is in the accumulation type. Scratch buffers are
// per thread and reused across calls.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/cpu_capability.h"
#include "common/micro_gemm.h"
#include "common/micro_gemm_bf16.h"
#include "cross_modal/cross_modal.h"

#ifdef MAVEN_FAST_BOUNDS_CHECKS
#define MF_BOUNDS_CHECK(cond, ...) TORCH_CHECK(cond, "maven_fast bounds check: ", __VA_ARGS__)
#else
#define MF_BOUNDS_CHECK(cond, ...) ((void)0)
#endif

namespace maven_fast {
namespace MAVEN_FAST_CPU_NS {
namespace {

using at::vec::Vectorized;
using cross_modal::AttentionProblem;
using cross_modal::DropoutParams;
using cross_modal::Philox;

constexpr int64_t kBQ = 64;   // query rows per block
constexpr int64_t kBK = 128;  // keys per block

template <typename acc_t>
struct Scratch {
  std::vector<acc_t> q, k, v, kt, vt, dout, obuf, s, dp, o, dq, dk, dv, row;
  std::vector<uint8_t> keep;
};

// Rows [0, n) x [0, d) of a strided sequence as acc_t with leading dimension
// `ld`: the storage itself when the types agree, else widened into `buf`.
template <typename scalar_t, typename acc_t>
const acc_t* as_acc(const scalar_t* src, int64_t n, int64_t d, int64_t stride,
                    std::vector<acc_t>& buf, int64_t& ld) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    ld = stride;
    return src;
  } else {
    buf.resize(std::max<int64_t>(1, n * d));
    for (int64_t r = 0; r < n; ++r)
      at::vec::convert(src + r * stride, buf.data() + r * d, d);
    ld = d;
    return buf.data();
  }
}

template <typename acc_t, typename scalar_t>
void store_rows(const acc_t* src, int64_t n, int64_t d, scalar_t* dst, int64_t stride) {
  for (int64_t r = 0; r < n; ++r) at::vec::convert(src + r * d, dst + r * stride, d);
}

template <typename scalar_t>
scalar_t* at_row(const cross_modal::StridedSeq& s, int64_t b, int64_t t, int64_t h) {
  return static_cast<scalar_t*>(s.ptr) + b * s.sb + t * s.st + h * s.sh;
}

struct DropoutState {
  bool on = false;
  uint32_t threshold = 0;
  double inv_keep = 1.0;
  Philox philox{0, 0, 0};
};

DropoutState make_dropout(const DropoutParams& d) {
  DropoutState s;
  s.on = d.p > 0.0;
  if (s.on) {
    s.threshold = cross_modal::dropout_threshold(d.p);
    s.inv_keep = 1.0 / (1.0 - d.p);
    s.philox = cross_modal::philox_of(d.rng);
  }
  return s;
}

// The keys (and values) of one (b, h) in the accumulation type: rows for the
// row-major products, and transposed ([d, len]) for the Q K^T-like ones.
template <typename scalar_t, typename acc_t>
struct KeyView {
  const acc_t* rows = nullptr;
  int64_t ld = 0;
  const acc_t* t = nullptr;  // [d, len], leading dimension len; null when not packed
};

template <typename scalar_t, typename acc_t>
KeyView<scalar_t, acc_t> key_view(const cross_modal::StridedSeq& seq, int64_t b, int64_t h,
                                  int64_t len, int64_t d, bool transposed,
                                  std::vector<acc_t>& rows_buf, std::vector<acc_t>& t_buf) {
  KeyView<scalar_t, acc_t> kv;
  const scalar_t* src = at_row<const scalar_t>(seq, b, 0, h);
  kv.rows = as_acc(src, len, d, seq.st, rows_buf, kv.ld);
  if (transposed) {
    t_buf.resize(std::max<int64_t>(1, d * len));
    micro::pack_transposed(len, d, kv.rows, kv.ld, t_buf.data(), len);
    kv.t = t_buf.data();
  }
  return kv;
}

// Row (b, h) of a saved [B, H, tq] statistic (lse, psum, dpsum); null when absent.
template <typename T>
T* head_stat(const void* base, const AttentionProblem& P, int64_t b, int64_t h) {
  return base ? static_cast<T*>(const_cast<void*>(base)) + (b * P.heads + h) * P.tq : nullptr;
}

// D_r = <do_r, o_r> (+ dpsum_r psum_r) for rows r < n (= sum_j p_rj dp_rj);
// `dot` multiplies two rows of T in the accumulation type.
template <typename T, typename acc_t, typename Dot>
void softmax_deltas(const T* dout, int64_t lddo, const T* o, int64_t ldo, int64_t n, int64_t d,
                    const acc_t* psum, const acc_t* dpsum, acc_t* out, Dot dot) {
  for (int64_t r = 0; r < n; ++r) {
    acc_t v = dot(dout + r * lddo, o + r * ldo, d);
    if (dpsum) v += dpsum[r] * psum[r];
    out[r] = v;
  }
}

// One query row of the forward on a key block of width bk starting at key j0
// (online softmax): sr = s on entry, p~ (unnormalised, dropped) on exit;
// m, l, ps and the output row o are rescaled to the new running maximum.
template <typename acc_t>
void online_softmax_row(acc_t* sr, int64_t bk, acc_t& m, acc_t& l, acc_t& ps, acc_t* o, int64_t dv,
                        bool want_psum, const DropoutState& drop, uint32_t stream, int64_t b, int64_t row,
                        int64_t j0, std::vector<uint8_t>& keep) {
  using V = Vectorized<acc_t>;
  const acc_t mx = at::vec::reduce_all<acc_t>([](V& x, V& y) { return at::vec::maximum(x, y); }, sr, bk);
  const acc_t m_new = std::max(m, mx);
  const acc_t alpha = std::exp(m - m_new);  // 0 on the first block (m = -inf)
  at::vec::map([m_new](V x) { return (x - V(m_new)).exp(); }, sr, sr, bk);
  const acc_t sum = at::vec::reduce_all<acc_t>([](V& x, V& y) { return x + y; }, sr, bk);
  l = l * alpha + sum;
  m = m_new;
  if (alpha != acc_t(1)) {
    at::vec::map([alpha](V x) { return x * V(alpha); }, o, o, dv);
    ps *= alpha;
  }
  if (drop.on) {
    const acc_t inv_keep = static_cast<acc_t>(drop.inv_keep);
    drop.philox.keep_row(stream, b, row, j0, bk, drop.threshold, keep.data());
    for (int64_t j = 0; j < bk; ++j) sr[j] = keep[j] ? sr[j] * inv_keep : acc_t(0);
  }
  if (want_psum) ps += at::vec::reduce_all<acc_t>([](V& x, V& y) { return x + y; }, sr, bk);
}

// o /= l, lse = m + log l, psum = ps / l; an empty row (l = 0): lse = +inf, psum = 0.
template <typename acc_t>
void finish_row(acc_t* o, int64_t dv, acc_t m, acc_t l, acc_t ps, acc_t* lse, acc_t* psum) {
  using V = Vectorized<acc_t>;
  if (l > acc_t(0)) {
    const acc_t inv = acc_t(1) / l;
    at::vec::map([inv](V x) { return x * V(inv); }, o, o, dv);
    *lse = m + std::log(l);
    if (psum) *psum = ps * inv;
  } else {
    *lse = std::numeric_limits<acc_t>::infinity();
    if (psum) *psum = acc_t(0);
  }
}

template <typename scalar_t>
void forward_task(const AttentionProblem& P, const DropoutState& drop, int64_t b, int64_t h0,
                  int64_t h1, Scratch<at::opmath_type<scalar_t>>& ws) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t len = P.key_len[b], dk = P.dk, dv = P.dv, tq = P.tq;
  MF_BOUNDS_CHECK(len >= 0 && len <= P.tk, "pathway ", P.pathway, " key length ", len, " not in [0, ", P.tk, "]");
  MF_BOUNDS_CHECK(b < P.batch && h1 <= P.heads, "attention task out of range");
  const bool shared_kv = P.k.sh == 0;
  const bool packed = tq >= 4;
  ws.o.resize(kBQ * dv);
  ws.s.resize(kBQ * kBK);
  ws.keep.resize(kBK + 4);
  acc_t m[kBQ], l[kBQ], ps[kBQ];
  KeyView<scalar_t, acc_t> K, Vv;

  for (int64_t h = h0; h < h1; ++h) {
    if (h == h0 || !shared_kv) {
      K = key_view<scalar_t, acc_t>(P.k, b, h, len, dk, packed, ws.k, ws.kt);
      Vv = key_view<scalar_t, acc_t>(P.v, b, h, len, dv, false, ws.v, ws.vt);
    }
    const uint32_t stream = cross_modal::attention_stream(P.pathway, h);
    acc_t* lse = head_stat<acc_t>(P.lse, P, b, h);
    acc_t* psum = head_stat<acc_t>(P.psum, P, b, h);
    for (int64_t i0 = 0; i0 < tq; i0 += kBQ) {
      const int64_t bq = std::min(kBQ, tq - i0);
      int64_t ldq;
      const acc_t* q = as_acc(at_row<const scalar_t>(P.q, b, i0, h), bq, dk, P.q.st, ws.q, ldq);
      std::fill_n(ws.o.data(), bq * dv, acc_t(0));
      std::fill_n(m, bq, -std::numeric_limits<acc_t>::infinity());
      std::fill_n(l, bq, acc_t(0));
      std::fill_n(ps, bq, acc_t(0));
      for (int64_t j0 = 0; j0 < len; j0 += kBK) {
        const int64_t bk = std::min(kBK, len - j0);
        MF_BOUNDS_CHECK(j0 + bk <= P.tk && i0 + bq <= tq, "attention block out of range");
        acc_t* s = ws.s.data();
        micro::gemm_nt<acc_t>(bq, bk, dk, static_cast<acc_t>(P.scale), q, ldq, K.rows + j0 * K.ld,
                              K.ld, packed ? K.t + j0 : nullptr, len, s, bk);
        for (int64_t r = 0; r < bq; ++r)
          online_softmax_row(s + r * bk, bk, m[r], l[r], ps[r], ws.o.data() + r * dv, dv, psum != nullptr, drop,
                             stream, b, i0 + r, j0, ws.keep);
        micro::gemm_nn<acc_t>(bq, dv, bk, acc_t(1), s, bk, 1, Vv.rows + j0 * Vv.ld, Vv.ld, true,
                              ws.o.data(), dv);
      }
      for (int64_t r = 0; r < bq; ++r)
        finish_row(ws.o.data() + r * dv, dv, m[r], l[r], ps[r], lse + i0 + r, psum ? psum + i0 + r : nullptr);
      store_rows(ws.o.data(), bq, dv, at_row<scalar_t>(P.o, b, i0, h), P.o.st);
    }
  }
}

// One query row of the backward, on a key block of width bk starting at key j0:
//   p = exp(s - lse),  z_j = keep_j / (1 - p_drop) (1 without dropout)
//   sr  <- p z                                  (P~, for dV = P~^T dO)
//   dpr <- scale p (z (dpr + extra) - D)        (scale dS; extra = dpsum of the absorbed form)
template <typename acc_t>
void softmax_backward_row(acc_t* sr, acc_t* dpr, int64_t bk, acc_t lse, acc_t extra, acc_t d, acc_t scale,
                          const DropoutState& drop, uint32_t stream, int64_t b, int64_t row, int64_t j0,
                          std::vector<uint8_t>& keep) {
  using V = Vectorized<acc_t>;
  at::vec::map([lse](V x) { return (x - V(lse)).exp(); }, sr, sr, bk);
  if (!drop.on) {
    at::vec::map2([extra, d, scale](V p, V g) { return V(scale) * p * (g + V(extra - d)); }, dpr, sr, dpr, bk);
    return;
  }
  const acc_t inv_keep = static_cast<acc_t>(drop.inv_keep);
  drop.philox.keep_row(stream, b, row, j0, bk, drop.threshold, keep.data());
  for (int64_t j = 0; j < bk; ++j) {
    const acc_t z = keep[j] ? inv_keep : acc_t(0);
    const acc_t p = sr[j];
    dpr[j] = scale * p * ((dpr[j] + extra) * z - d);
    sr[j] = p * z;
  }
}

// dk_out[j] += acc[j] for the keys j < len of a shared K = V (dK + dV of every
// head; keys >= len get nothing).
template <typename acc_t, typename scalar_t>
void add_key_gradients(const acc_t* acc, int64_t len, int64_t d, scalar_t* out, int64_t stride) {
  for (int64_t j = 0; j < len; ++j) {
    scalar_t* o = out + j * stride;
    const acc_t* src = acc + j * d;
    for (int64_t c = 0; c < d; ++c) o[c] = static_cast<scalar_t>(static_cast<acc_t>(o[c]) + src[c]);
  }
}

// One head's dK and dV (keys < len) from the task's accumulators into the
// outputs, zeros for keys >= len.
template <typename scalar_t, typename acc_t>
void store_head_key_gradients(const AttentionProblem& P, int64_t b, int64_t h, int64_t len, Scratch<acc_t>& ws) {
  store_rows(ws.dk.data(), len, P.dk, at_row<scalar_t>(P.dk_out, b, 0, h), P.dk_out.st);
  store_rows(ws.dv.data(), len, P.dv, at_row<scalar_t>(P.dv_out, b, 0, h), P.dv_out.st);
  for (int64_t j = len; j < P.tk; ++j) {
    std::fill_n(at_row<scalar_t>(P.dk_out, b, j, h), P.dk, scalar_t(0));
    std::fill_n(at_row<scalar_t>(P.dv_out, b, j, h), P.dv, scalar_t(0));
  }
}

// The dK/dV accumulators of a backward task (keys < len; one buffer for dK + dV
// when the heads share K = V). The first query block of a head writes them
// instead of adding (writes_key_accumulators), so only a task without query
// rows needs them zeroed.
inline bool writes_key_accumulators(int64_t i0, int64_t h, int64_t h0, bool shared_kv) {
  return i0 == 0 && (h == h0 || !shared_kv);  // shared K = V: the first head's block only
}

template <typename acc_t>
void size_key_accumulators(Scratch<acc_t>& ws, int64_t len, int64_t dk, int64_t dv, bool shared_kv, int64_t tq) {
  const int64_t nk = std::max<int64_t>(1, len * dk), nv = std::max<int64_t>(1, len * dv);
  if (tq > 0) {
    ws.dk.resize(nk);
    if (!shared_kv) ws.dv.resize(nv);
  } else {
    ws.dk.assign(nk, acc_t(0));
    if (!shared_kv) ws.dv.assign(nv, acc_t(0));
  }
}

template <typename scalar_t>
void backward_task(const AttentionProblem& P, const DropoutState& drop, int64_t b, int64_t h0,
                   int64_t h1, Scratch<at::opmath_type<scalar_t>>& ws) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t len = P.key_len[b], dk = P.dk, dv = P.dv, tq = P.tq, tk = P.tk;
  MF_BOUNDS_CHECK(len >= 0 && len <= tk, "pathway ", P.pathway, " key length ", len, " not in [0, ", tk, "]");
  MF_BOUNDS_CHECK(b < P.batch && h1 <= P.heads, "attention backward task out of range");
  const bool shared_kv = P.k.sh == 0;
  const bool packed = tq >= 4;
  const acc_t scale = static_cast<acc_t>(P.scale);
  // dK/dV accumulators for all keys of this task; with shared K = V one
  // buffer collects dK + dV of every head.
  size_key_accumulators(ws, len, dk, dv, shared_kv, tq);
  ws.s.resize(kBQ * kBK);
  ws.dp.resize(kBQ * kBK);
  ws.keep.resize(kBK + 4);
  ws.row.resize(kBQ);
  ws.dq.resize(kBQ * dk);
  KeyView<scalar_t, acc_t> K, Vv;

  for (int64_t h = h0; h < h1; ++h) {
    if (len > 0 && (h == h0 || !shared_kv)) {
      K = key_view<scalar_t, acc_t>(P.k, b, h, len, dk, packed, ws.k, ws.kt);
      Vv = key_view<scalar_t, acc_t>(P.v, b, h, len, dv, packed, ws.v, ws.vt);
    }
    const uint32_t stream = cross_modal::attention_stream(P.pathway, h);
    const acc_t* lse = head_stat<const acc_t>(P.lse, P, b, h);
    const acc_t* psum = head_stat<const acc_t>(P.psum, P, b, h);
    const acc_t* dpsum = head_stat<const acc_t>(P.dpsum, P, b, h);
    acc_t* dk_acc = ws.dk.data();
    acc_t* dv_acc = shared_kv ? ws.dk.data() : ws.dv.data();
    for (int64_t i0 = 0; i0 < tq; i0 += kBQ) {
      const int64_t bq = std::min(kBQ, tq - i0);
      scalar_t* dq_out = at_row<scalar_t>(P.dq, b, i0, h);
      if (len == 0) {
        for (int64_t r = 0; r < bq; ++r) std::fill_n(dq_out + r * P.dq.st, dk, scalar_t(0));
        continue;
      }
      int64_t ldq, lddo, ldo;
      const acc_t* q = as_acc(at_row<const scalar_t>(P.q, b, i0, h), bq, dk, P.q.st, ws.q, ldq);
      const acc_t* dout =
          as_acc(at_row<const scalar_t>(P.dout, b, i0, h), bq, dv, P.dout.st, ws.dout, lddo);
      const acc_t* o = as_acc(at_row<const scalar_t>(P.o, b, i0, h), bq, dv, P.o.st, ws.obuf, ldo);
      softmax_deltas(dout, lddo, o, ldo, bq, dv, psum ? psum + i0 : nullptr, dpsum ? dpsum + i0 : nullptr,
                     ws.row.data(), micro::dot<acc_t>);
      const bool fresh = writes_key_accumulators(i0, h, h0, shared_kv);
      for (int64_t j0 = 0; j0 < len; j0 += kBK) {
        const int64_t bk = std::min(kBK, len - j0);
        MF_BOUNDS_CHECK(j0 + bk <= tk && i0 + bq <= tq, "backward block out of range");
        const acc_t* kb = K.rows + j0 * K.ld;
        acc_t* s = ws.s.data();
        acc_t* dp = ws.dp.data();
        micro::gemm_nt<acc_t>(bq, bk, dk, scale, q, ldq, kb, K.ld, packed ? K.t + j0 : nullptr, len,
                              s, bk);
        micro::gemm_nt<acc_t>(bq, bk, dv, acc_t(1), dout, lddo, Vv.rows + j0 * Vv.ld, Vv.ld,
                              packed ? Vv.t + j0 : nullptr, len, dp, bk);
        for (int64_t r = 0; r < bq; ++r) {
          acc_t* sr = s + r * bk;    // -> p, then p~ (dropped) for dV
          acc_t* dpr = dp + r * bk;  // -> scale * ds
          softmax_backward_row(sr, dpr, bk, lse[i0 + r], dpsum ? dpsum[i0 + r] : acc_t(0), ws.row[r], scale,
                               drop, stream, b, i0 + r, j0, ws.keep);
        }
        // dV[j0:] += P~^T dO;  dQ += dS K;  dK[j0:] += dS^T Q.
        micro::gemm_nn<acc_t>(bk, dv, bq, acc_t(1), s, 1, bk, dout, lddo, !fresh, dv_acc + j0 * dv, dv);
        micro::gemm_nn<acc_t>(bq, dk, bk, acc_t(1), dp, bk, 1, kb, K.ld, j0 > 0, ws.dq.data(), dk);
        micro::gemm_nn<acc_t>(bk, dk, bq, acc_t(1), dp, 1, bk, q, ldq, !fresh || shared_kv, dk_acc + j0 * dk, dk);
      }
      store_rows(ws.dq.data(), bq, dk, dq_out, P.dq.st);
    }
    if (!shared_kv) store_head_key_gradients<scalar_t>(P, b, h, len, ws);
  }
  if (shared_kv) add_key_gradients(ws.dk.data(), len, dk, at_row<scalar_t>(P.dk_out, b, 0, 0), P.dk_out.st);
}

#if defined(CPU_CAPABILITY_AVX512)
bool bf16_dot_products() { return cpu_capability() == CpuCapability::AVX512_BF16; }

// ---------------------------------------------------------------------------
// bf16 inputs on AVX512-BF16: the same tasks with every product on bf16 pairs
// (micro_gemm_bf16.h), fp32 accumulation, softmax and dropout in fp32 as
// above. P~ and scale dS are rounded to bf16 for their products (as
// FlashAttention does on tensor cores); the accumulators (O, dQ, dK, dV) stay fp32.
namespace mb = micro_bf16;
using BF16 = c10::BFloat16;

struct WordScratch {
  // K^T and V^T as words [d/2][len] (B of Q K^T, dO V^T); K, V as row pairs
  // [len/2][d] (B of P V, dS K); Q, dO as words (A: read in place, copied here only when
  // unaligned, see row_words) and row pairs (B of dS^T Q, P~^T dO);
  // P~ and dS as words along keys (A of P V, dS K) and along queries (A of P~^T dO, dS^T Q).
  std::vector<uint32_t> k_rows, kt, vt, kp, vp, q, dout, qp, dop, p, pt, ds, dst;
};

inline int64_t words(int64_t n) { return (n + 1) / 2; }

uint32_t* sized(std::vector<uint32_t>& buf, int64_t n) {
  buf.resize(std::max<int64_t>(1, n));
  return buf.data();
}

// Rows [0, n) x [0, d) of bf16 storage (row stride ld) as words, pairs along
// each row: the storage itself when its rows are whole 4-byte aligned pairs
// (the usual case: no copy), else packed into `buf`. `ldw` gets the word stride.
const uint32_t* row_words(const BF16* src, int64_t n, int64_t d, int64_t ld, std::vector<uint32_t>& buf,
                          int64_t& ldw) {
  if (d % 2 == 0 && ld % 2 == 0 && reinterpret_cast<uintptr_t>(src) % alignof(uint32_t) == 0) {
    ldw = ld / 2;
    return reinterpret_cast<const uint32_t*>(src);
  }
  ldw = words(d);
  mb::rows_to_words(src, n, d, ld, sized(buf, n * ldw), ldw);
  return buf.data();
}

// The keys of one (b, h) for the products: transposed words [dk/2][len] and,
// when `pairs`, row pairs [len/2][dk].
void pack_keys(const cross_modal::StridedSeq& seq, int64_t b, int64_t h, int64_t len, int64_t d,
               std::vector<uint32_t>& rows_buf, std::vector<uint32_t>& t, std::vector<uint32_t>* pairs) {
  const BF16* src = at_row<const BF16>(seq, b, 0, h);
  int64_t ldw;
  const uint32_t* rows = row_words(src, len, d, seq.st, rows_buf, ldw);
  micro::transpose32(rows, len, words(d), ldw, sized(t, words(d) * len), len);
  if (pairs) mb::row_pairs_to_words(src, len, d, seq.st, sized(*pairs, words(len) * d), d);
}

void forward_task_bf16_dot(const AttentionProblem& P, const DropoutState& drop, int64_t b, int64_t h0,
                           int64_t h1, Scratch<float>& ws, WordScratch& wb) {
  const int64_t len = P.key_len[b], dk = P.dk, dv = P.dv, tq = P.tq;
  MF_BOUNDS_CHECK(len >= 0 && len <= P.tk, "pathway ", P.pathway, " key length ", len, " not in [0, ", P.tk, "]");
  MF_BOUNDS_CHECK(b < P.batch && h1 <= P.heads, "attention task out of range");
  const bool shared_kv = P.k.sh == 0;
  ws.o.resize(kBQ * dv);
  ws.s.resize(kBQ * kBK);
  ws.keep.resize(kBK + 4);
  uint32_t* p = sized(wb.p, kBQ * words(kBK));
  float m[kBQ], l[kBQ], ps[kBQ];
  for (int64_t h = h0; h < h1; ++h) {
    if (h == h0 || !shared_kv) {
      pack_keys(P.k, b, h, len, dk, wb.k_rows, wb.kt, nullptr);
      mb::row_pairs_to_words(at_row<const BF16>(P.v, b, 0, h), len, dv, P.v.st, sized(wb.vp, words(len) * dv), dv);
    }
    const uint32_t stream = cross_modal::attention_stream(P.pathway, h);
    float* lse = head_stat<float>(P.lse, P, b, h);
    float* psum = head_stat<float>(P.psum, P, b, h);
    for (int64_t i0 = 0; i0 < tq; i0 += kBQ) {
      const int64_t bq = std::min(kBQ, tq - i0);
      int64_t ldq;
      const uint32_t* q = row_words(at_row<const BF16>(P.q, b, i0, h), bq, dk, P.q.st, wb.q, ldq);
      std::fill_n(ws.o.data(), bq * dv, 0.f);
      std::fill_n(m, bq, -std::numeric_limits<float>::infinity());
      std::fill_n(l, bq, 0.f);
      std::fill_n(ps, bq, 0.f);
      for (int64_t j0 = 0; j0 < len; j0 += kBK) {  // kBK is even: blocks start on whole pairs
        const int64_t bk = std::min(kBK, len - j0);
        MF_BOUNDS_CHECK(j0 + bk <= P.tk && i0 + bq <= tq, "attention block out of range");
        float* s = ws.s.data();
        mb::gemm_pairs(bq, bk, words(dk), static_cast<float>(P.scale), q, ldq, 1, wb.kt.data() + j0, len, false,
                       s, bk);
        for (int64_t r = 0; r < bq; ++r)
          online_softmax_row(s + r * bk, bk, m[r], l[r], ps[r], ws.o.data() + r * dv, dv, psum != nullptr, drop,
                             stream, b, i0 + r, j0, ws.keep);
        mb::rows_to_words(s, bq, bk, bk, p, words(bk));
        mb::gemm_pairs(bq, dv, words(bk), 1.f, p, words(bk), 1, wb.vp.data() + (j0 / 2) * dv, dv, true,
                       ws.o.data(), dv);
      }
      for (int64_t r = 0; r < bq; ++r)
        finish_row(ws.o.data() + r * dv, dv, m[r], l[r], ps[r], lse + i0 + r, psum ? psum + i0 + r : nullptr);
      store_rows(ws.o.data(), bq, dv, at_row<BF16>(P.o, b, i0, h), P.o.st);
    }
  }
}

void backward_task_bf16_dot(const AttentionProblem& P, const DropoutState& drop, int64_t b, int64_t h0,
                            int64_t h1, Scratch<float>& ws, WordScratch& wb) {
  const int64_t len = P.key_len[b], dk = P.dk, dv = P.dv, tq = P.tq, tk = P.tk;
  MF_BOUNDS_CHECK(len >= 0 && len <= tk, "pathway ", P.pathway, " key length ", len, " not in [0, ", tk, "]");
  MF_BOUNDS_CHECK(b < P.batch && h1 <= P.heads, "attention backward task out of range");
  const bool shared_kv = P.k.sh == 0;
  const float scale = static_cast<float>(P.scale);
  size_key_accumulators(ws, len, dk, dv, shared_kv, tq);
  ws.s.resize(kBQ * kBK);
  ws.dp.resize(kBQ * kBK);
  ws.keep.resize(kBK + 4);
  ws.row.resize(kBQ);
  ws.dq.resize(kBQ * dk);
  uint32_t* qp = sized(wb.qp, words(kBQ) * dk);
  uint32_t* dop = sized(wb.dop, words(kBQ) * dv);
  uint32_t* pt = sized(wb.pt, words(kBQ) * kBK);
  uint32_t* ds = sized(wb.ds, kBQ * words(kBK));
  uint32_t* dst = sized(wb.dst, words(kBQ) * kBK);
  for (int64_t h = h0; h < h1; ++h) {
    if (len > 0 && (h == h0 || !shared_kv)) {
      pack_keys(P.k, b, h, len, dk, wb.k_rows, wb.kt, &wb.kp);
      pack_keys(P.v, b, h, len, dv, wb.k_rows, wb.vt, nullptr);
    }
    const uint32_t stream = cross_modal::attention_stream(P.pathway, h);
    const float* lse = head_stat<const float>(P.lse, P, b, h);
    const float* psum = head_stat<const float>(P.psum, P, b, h);
    const float* dpsum = head_stat<const float>(P.dpsum, P, b, h);
    float* dk_acc = ws.dk.data();
    float* dv_acc = shared_kv ? ws.dk.data() : ws.dv.data();
    for (int64_t i0 = 0; i0 < tq; i0 += kBQ) {
      const int64_t bq = std::min(kBQ, tq - i0);
      BF16* dq_out = at_row<BF16>(P.dq, b, i0, h);
      if (len == 0) {
        for (int64_t r = 0; r < bq; ++r) std::fill_n(dq_out + r * P.dq.st, dk, BF16(0));
        continue;
      }
      const BF16* q_src = at_row<const BF16>(P.q, b, i0, h);
      const BF16* do_src = at_row<const BF16>(P.dout, b, i0, h);
      int64_t ldq, lddw;
      const uint32_t* q = row_words(q_src, bq, dk, P.q.st, wb.q, ldq);
      const uint32_t* dout = row_words(do_src, bq, dv, P.dout.st, wb.dout, lddw);
      mb::row_pairs_to_words(q_src, bq, dk, P.q.st, qp, dk);
      mb::row_pairs_to_words(do_src, bq, dv, P.dout.st, dop, dv);
      // D from the bf16 rows, widened in registers (no fp32 copies of dO and O).
      softmax_deltas(do_src, P.dout.st, at_row<const BF16>(P.o, b, i0, h), P.o.st, bq, dv,
                     psum ? psum + i0 : nullptr, dpsum ? dpsum + i0 : nullptr, ws.row.data(), mb::dot);
      const bool fresh = writes_key_accumulators(i0, h, h0, shared_kv);
      for (int64_t j0 = 0; j0 < len; j0 += kBK) {
        const int64_t bk = std::min(kBK, len - j0);
        MF_BOUNDS_CHECK(j0 + bk <= tk && i0 + bq <= tq, "backward block out of range");
        float* s = ws.s.data();
        float* dp = ws.dp.data();
        mb::gemm_pairs(bq, bk, words(dk), scale, q, ldq, 1, wb.kt.data() + j0, len, false, s, bk);
        mb::gemm_pairs(bq, bk, words(dv), 1.f, dout, lddw, 1, wb.vt.data() + j0, len, false, dp, bk);
        for (int64_t r = 0; r < bq; ++r)
          softmax_backward_row(s + r * bk, dp + r * bk, bk, lse[i0 + r], dpsum ? dpsum[i0 + r] : 0.f, ws.row[r],
                               scale, drop, stream, b, i0 + r, j0, ws.keep);
        // dV[j0:] += P~^T dO;  dQ += dS K;  dK[j0:] += dS^T Q  (A(j, e) of the transposed ones: [e][j]).
        mb::row_pairs_to_words(s, bq, bk, bk, pt, bk);
        mb::gemm_pairs(bk, dv, words(bq), 1.f, pt, 1, bk, dop, dv, !fresh, dv_acc + j0 * dv, dv);
        mb::rows_to_words(dp, bq, bk, bk, ds, words(bk));
        mb::gemm_pairs(bq, dk, words(bk), 1.f, ds, words(bk), 1, wb.kp.data() + (j0 / 2) * dk, dk, j0 > 0,
                       ws.dq.data(), dk);
        mb::row_pairs_to_words(dp, bq, bk, bk, dst, bk);
        mb::gemm_pairs(bk, dk, words(bq), 1.f, dst, 1, bk, qp, dk, !fresh || shared_kv, dk_acc + j0 * dk, dk);
      }
      store_rows(ws.dq.data(), bq, dk, dq_out, P.dq.st);
    }
    if (!shared_kv) store_head_key_gradients<BF16>(P, b, h, len, ws);
  }
  if (shared_kv) add_key_gradients(ws.dk.data(), len, dk, at_row<BF16>(P.dk_out, b, 0, 0), P.dk_out.st);
}
#endif  // CPU_CAPABILITY_AVX512

// Backward of a pathway with K = V shared by the heads (weight absorption) and
// few query rows (tq <= kSmallQ, e.g. one pooled query): all heads per key
// block, so that dK + dV of every head is ONE rank-(2 H tq) update of the key
// rows, added straight into dk_out (fp32; an fp32 buffer added at the end
// otherwise), instead of 2 H rank-tq passes over a buffer and a final pass.
//   F rows (per head h): p~_h (tq rows), scale * ds_h (tq rows), over the keys
//   W rows (per head h): do_h (tq rows),  q_h (tq rows)
//   dK + dV [keys of the block] += F^T W;   dq_h += (scale ds_h) K
constexpr int64_t kSmallQ = 8;

template <typename scalar_t>
void backward_task_shared_small(const AttentionProblem& P, const DropoutState& drop, int64_t b,
                                Scratch<at::opmath_type<scalar_t>>& ws) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t len = P.key_len[b], d = P.dk, tq = P.tq, H = P.heads;
  MF_BOUNDS_CHECK(len >= 0 && len <= P.tk, "pathway ", P.pathway, " key length ", len, " not in [0, ", P.tk, "]");
  MF_BOUNDS_CHECK(P.dk == P.dv && P.k.sh == 0 && tq <= kSmallQ, "small shared-K backward misused");
  if (len == 0) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 0; r < tq; ++r) std::fill_n(at_row<scalar_t>(P.dq, b, r, h), d, scalar_t(0));
    return;
  }
  const acc_t scale = static_cast<acc_t>(P.scale);
  const bool packed = tq >= 4;
  const KeyView<scalar_t, acc_t> K = key_view<scalar_t, acc_t>(P.k, b, 0, len, d, packed, ws.k, ws.kt);
  const int64_t nf = 2 * H * tq;  // factor rows
  // W = [do_0; q_0; do_1; q_1; ...] in acc_t; D_i per head and row.
  ws.v.resize(nf * d);
  ws.row.resize(H * tq);
  for (int64_t h = 0; h < H; ++h) {
    acc_t* w_do = ws.v.data() + (2 * h) * tq * d;
    acc_t* w_q = w_do + tq * d;
    for (int64_t r = 0; r < tq; ++r) {
      at::vec::convert(at_row<const scalar_t>(P.dout, b, r, h), w_do + r * d, d);
      at::vec::convert(at_row<const scalar_t>(P.q, b, r, h), w_q + r * d, d);
    }
    int64_t ldo;
    const acc_t* o = as_acc(at_row<const scalar_t>(P.o, b, 0, h), tq, d, P.o.st, ws.obuf, ldo);
    softmax_deltas(w_do, d, o, ldo, tq, d, head_stat<const acc_t>(P.psum, P, b, h),
                   head_stat<const acc_t>(P.dpsum, P, b, h), ws.row.data() + h * tq, micro::dot<acc_t>);
  }
  ws.dq.assign(H * tq * d, acc_t(0));
  ws.s.resize(nf * kBK);
  ws.keep.resize(kBK + 4);
  constexpr bool kDirect = std::is_same_v<scalar_t, acc_t>;  // add into dk_out itself
  if constexpr (!kDirect) ws.dk.assign(len * d, acc_t(0));
  for (int64_t j0 = 0; j0 < len; j0 += kBK) {
    const int64_t bk = std::min(kBK, len - j0);
    const acc_t* kb = K.rows + j0 * K.ld;
    for (int64_t h = 0; h < H; ++h) {
      acc_t* s = ws.s.data() + (2 * h) * tq * bk;   // -> p~
      acc_t* dp = s + tq * bk;                       // -> scale * ds
      const acc_t* w_do = ws.v.data() + (2 * h) * tq * d;
      const acc_t* w_q = w_do + tq * d;
      micro::gemm_nt<acc_t>(tq, bk, d, scale, w_q, d, kb, K.ld, packed ? K.t + j0 : nullptr, len, s, bk);
      micro::gemm_nt<acc_t>(tq, bk, d, acc_t(1), w_do, d, kb, K.ld, packed ? K.t + j0 : nullptr, len, dp, bk);
      const uint32_t stream = cross_modal::attention_stream(P.pathway, h);
      const acc_t* lse = head_stat<const acc_t>(P.lse, P, b, h);
      const acc_t* dpsum = head_stat<const acc_t>(P.dpsum, P, b, h);
      for (int64_t r = 0; r < tq; ++r) {
        acc_t* sr = s + r * bk;
        acc_t* dpr = dp + r * bk;
        softmax_backward_row(sr, dpr, bk, lse[r], dpsum ? dpsum[r] : acc_t(0), ws.row[h * tq + r], scale, drop,
                             stream, b, r, j0, ws.keep);
      }
      micro::gemm_nn<acc_t>(tq, d, bk, acc_t(1), dp, bk, 1, kb, K.ld, true, ws.dq.data() + h * tq * d, d);
    }
    // Rows of F are per head [p~ (tq); scale ds (tq)], each bk long: F(j, f) = s[f * bk + j].
    if constexpr (kDirect) {
      auto* out = reinterpret_cast<acc_t*>(at_row<scalar_t>(P.dk_out, b, j0, 0));
      micro::gemm_nn<acc_t>(bk, d, nf, acc_t(1), ws.s.data(), 1, bk, ws.v.data(), d, true, out, P.dk_out.st);
    } else {
      micro::gemm_nn<acc_t>(bk, d, nf, acc_t(1), ws.s.data(), 1, bk, ws.v.data(), d, true,
                            ws.dk.data() + j0 * d, d);
    }
  }
  for (int64_t h = 0; h < H; ++h)
    store_rows(ws.dq.data() + h * tq * d, tq, d, at_row<scalar_t>(P.dq, b, 0, h), P.dq.st);
  if constexpr (!kDirect) {  // dk_out += dK + dV (keys >= len get nothing)
    scalar_t* out = at_row<scalar_t>(P.dk_out, b, 0, 0);
    for (int64_t j = 0; j < len; ++j) {
      scalar_t* o = out + j * P.dk_out.st;
      const acc_t* src = ws.dk.data() + j * d;
      for (int64_t c = 0; c < d; ++c) o[c] = static_cast<scalar_t>(static_cast<acc_t>(o[c]) + src[c]);
    }
  }
}

// Runs the forward (or backward) task on bf16 pairs when the inputs are bf16
// and the CPU has AVX512-BF16; false: the caller runs the fp32-product task.
template <typename scalar_t, bool kForward>
bool bf16_dot_task(const AttentionProblem& P, const DropoutState& drop, int64_t b, int64_t h0, int64_t h1,
                   Scratch<at::opmath_type<scalar_t>>& ws) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    if (!bf16_dot_products()) return false;
    thread_local WordScratch wb;
    if constexpr (kForward) {
      forward_task_bf16_dot(P, drop, b, h0, h1, ws, wb);
    } else {
      backward_task_bf16_dot(P, drop, b, h0, h1, ws, wb);
    }
    return true;
  }
#endif
  return false;
}

// Tasks: for every batch item b (outermost, so that the contiguous chunks of
// at::parallel_for's static split get similar mixes of pathways), one task per
// head of each pathway, or, when the heads share K = V, one task per group of
// pathways that write the same dK buffer (run in sequence: they accumulate).
template <typename F>
void for_each_task(const std::vector<AttentionProblem>& problems, bool group_shared, const F& fn) {
  if (problems.empty()) return;
  const int64_t batch = problems[0].batch;
  struct Group {
    std::vector<const AttentionProblem*> members;
    int64_t head = -1;  // >= 0: this head of the single member; -1: all heads
  };
  std::vector<Group> groups;
  for (const auto& P : problems) {
    TORCH_INTERNAL_ASSERT(P.batch == batch);
    if (P.k.sh != 0) {
      for (int64_t h = 0; h < P.heads; ++h) groups.push_back({{&P}, h});
      continue;
    }
    Group* g = nullptr;
    if (group_shared)
      for (auto& other : groups)
        if (other.head < 0 && other.members[0]->dk_out.ptr == P.dk_out.ptr) g = &other;
    if (g) {
      g->members.push_back(&P);
    } else {
      groups.push_back({{&P}, -1});
    }
  }
  const int64_t per_item = static_cast<int64_t>(groups.size());
  at::parallel_for(0, batch * per_item, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / per_item;
      const Group& g = groups[t % per_item];
      for (const AttentionProblem* P : g.members) {
        if (g.head >= 0) {
          fn(*P, b, g.head, g.head + 1);
        } else {
          fn(*P, b, int64_t(0), P->heads);
        }
      }
    }
  });
}

}  // namespace

void cross_modal_attention_forward_cpu_kernel(at::ScalarType dtype,
                                              const std::vector<AttentionProblem>& problems,
                                              const DropoutParams& dropout) {
  const DropoutState drop = make_dropout(dropout);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "cross_modal_attention_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for_each_task(problems, false, [&](const AttentionProblem& P, int64_t b, int64_t h0, int64_t h1) {
      thread_local Scratch<acc_t> ws;
      if (!bf16_dot_task<scalar_t, true>(P, drop, b, h0, h1, ws)) forward_task<scalar_t>(P, drop, b, h0, h1, ws);
    });
  });
}

void cross_modal_attention_backward_cpu_kernel(at::ScalarType dtype,
                                               const std::vector<AttentionProblem>& problems,
                                               const DropoutParams& dropout) {
  const DropoutState drop = make_dropout(dropout);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "cross_modal_attention_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for_each_task(problems, true, [&](const AttentionProblem& P, int64_t b, int64_t h0, int64_t h1) {
      thread_local Scratch<acc_t> ws;
      if (P.k.sh == 0 && P.tq <= kSmallQ && P.dk == P.dv && h0 == 0 && h1 == P.heads) {
        backward_task_shared_small<scalar_t>(P, drop, b, ws);
        return;
      }
      if (!bf16_dot_task<scalar_t, false>(P, drop, b, h0, h1, ws)) backward_task<scalar_t>(P, drop, b, h0, h1, ws);
    });
  });
}

}  // namespace MAVEN_FAST_CPU_NS
}  // namespace maven_fast
