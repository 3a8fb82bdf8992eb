// CPU kernel of the cross-modal block's combination, ONE pass over the rows of
// all three modalities (one at::parallel_for over (modality, batch item)):
//
//   sum_r = x_r + rows_r + sum_items [ bias + (len_b > 0) sum_h k_rh c_bh ]
//   u_r   = (sum_r / 3) * z_r / (1 - p_out)                 (z: Philox keep mask)
//   y_r   = (u_r - mean(u_r)) * rstd_r * gamma + beta,  rstd_r = 1 / sqrt(var(u_r) + eps)
//
// rows_r: the out_proj output of the pathways computed per query row; items:
// key-length-1 pathways, whose output is the same for every row of item b
// except for the attention-dropout keep flags k_rh (Philox, key column 0;
// k_rh = 1 without attention dropout, when c is already summed over heads).
// Backward, with g_r = dL/dy_r (xhat = (u - mean) rstd):
//   dgamma = sum_r g_r xhat_r,  dbeta = sum_r g_r
//   du_r   = rstd_r (g_r gamma - mean(g_r gamma) - xhat_r mean(g_r gamma xhat_r))
//   dsum_r = du_r z_r / (3 (1 - p_out))       (= dL/dx_r = dL/drows_r)
//   dc_bh  = (len_b > 0) sum_{r in b} k_rh dsum_r,   dbias_rows = sum_r dsum_r
// Statistics and reductions in the accumulation type; per-task partial sums
// added in task order, so results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <vector>

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
using cross_modal::CombineModality;
using cross_modal::CombineParams;
using cross_modal::Philox;

struct Drop {
  bool on = false;
  uint32_t threshold = 0;
  double inv_keep = 1.0;
  Philox philox{0, 0, 0};
};

Drop make_drop(const cross_modal::DropoutParams& d) {
  Drop s;
  s.on = d.p > 0.0;
  if (s.on) {
    s.threshold = cross_modal::dropout_threshold(d.p);
    s.inv_keep = 1.0 / (1.0 - d.p);
    s.philox = cross_modal::philox_of(d.rng);
  }
  return s;
}

// Multiplier of item term (pathway, head h) on row i of item b.
template <typename acc_t>
acc_t item_keep(const Drop& attn, const CombineModality::ItemTerm& it, int64_t b, int64_t i,
                int64_t h) {
  if (!attn.on) return acc_t(1);
  uint32_t w[4];
  attn.philox(0, static_cast<uint32_t>(i), cross_modal::attention_stream(it.pathway, h),
              static_cast<uint32_t>(b) + attn.philox.offset, w);
  return w[0] >= attn.threshold ? static_cast<acc_t>(attn.inv_keep) : acc_t(0);
}

struct Task {
  int m;
  int64_t b;
};

// Batch item outermost: at::parallel_for gives each thread a contiguous range
// of tasks, and the modalities' row counts differ (64 video rows against one
// pooled audio row in the reference presets), so each range takes whole items.
std::vector<Task> make_tasks(const CombineParams& P) {
  std::vector<Task> tasks;
  int64_t batch = 0;
  for (int m = 0; m < cross_modal::kNumModalities; ++m) batch = std::max(batch, P.m[m].batch);
  for (int64_t b = 0; b < batch; ++b)
    for (int m = 0; m < cross_modal::kNumModalities; ++m)
      if (b < P.m[m].batch && P.m[m].t > 0) tasks.push_back({m, b});
  return tasks;
}

template <typename scalar_t>
void forward_impl(const CombineParams& P) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vectorized<acc_t>;
  const Drop attn = make_drop(P.attn_dropout), out = make_drop(P.out_dropout);
  const auto tasks = make_tasks(P);
  const int64_t d = P.m[0].d;
  std::vector<acc_t> gamma(d), beta(d);
  at::vec::convert(static_cast<const scalar_t*>(P.ln_weight), gamma.data(), d);
  at::vec::convert(static_cast<const scalar_t*>(P.ln_bias), beta.data(), d);
  const acc_t third = acc_t(1) / acc_t(3);
  const acc_t eps = static_cast<acc_t>(P.eps);

  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    std::vector<acc_t> sum(d), tmp(d), base(d);
    std::vector<uint8_t> keep(d + 4);
    for (int64_t t = t0; t < t1; ++t) {
      const CombineModality& M = P.m[tasks[t].m];
      const int64_t b = tasks[t].b;
      // The part of the item terms that is the same for every row: the biases,
      // and (without attention dropout) the head-summed values.
      std::fill(base.begin(), base.end(), acc_t(0));
      for (const auto& it : M.items) {
        at::vec::convert(static_cast<const scalar_t*>(it.bias), tmp.data(), d);
        at::vec::map2([](V a, V c) { return a + c; }, base.data(), base.data(), tmp.data(), d);
        MF_BOUNDS_CHECK(it.key_len[b] >= 0 && it.key_len[b] <= 1, "item key length");
        if (!attn.on && it.key_len[b] > 0) {
          at::vec::convert(static_cast<const scalar_t*>(it.c) + b * d, tmp.data(), d);
          at::vec::map2([](V a, V c) { return a + c; }, base.data(), base.data(), tmp.data(), d);
        }
      }
      MF_BOUNDS_CHECK(b < M.batch && M.d == d, "combine task out of range");
      for (int64_t i = 0; i < M.t; ++i) {
        const int64_t r = b * M.t + i;
        at::vec::convert(static_cast<const scalar_t*>(M.x) + r * d, sum.data(), d);
        at::vec::map2([](V a, V c) { return a + c; }, sum.data(), sum.data(), base.data(), d);
        if (M.rows) {
          at::vec::convert(static_cast<const scalar_t*>(M.rows) + r * d, tmp.data(), d);
          at::vec::map2([](V a, V c) { return a + c; }, sum.data(), sum.data(), tmp.data(), d);
        }
        if (attn.on) {
          for (const auto& it : M.items) {
            if (it.key_len[b] == 0) continue;
            for (int64_t h = 0; h < it.heads; ++h) {
              const acc_t k = item_keep<acc_t>(attn, it, b, i, h);
              if (k == acc_t(0)) continue;
              at::vec::convert(static_cast<const scalar_t*>(it.c) + (b * it.heads + h) * d,
                               tmp.data(), d);
              at::vec::map2([k](V a, V c) { return a + V(k) * c; }, sum.data(), sum.data(),
                            tmp.data(), d);
            }
          }
        }
        if (out.on) {
          out.philox.keep_row(cross_modal::output_stream(M.modality), b, i, 0, d, out.threshold,
                              keep.data());
          const acc_t s = third * static_cast<acc_t>(out.inv_keep);
          for (int64_t c = 0; c < d; ++c) sum[c] = keep[c] ? sum[c] * s : acc_t(0);
        } else {
          at::vec::map([third](V a) { return a * V(third); }, sum.data(), sum.data(), d);
        }
        // LayerNorm: two-pass statistics on the row in registers/L1.
        const acc_t mean =
            at::vec::reduce_all<acc_t>([](V& a, V& c) { return a + c; }, sum.data(), d) / d;
        const acc_t var = at::vec::map_reduce_all<acc_t>(
                              [mean](V a) { return (a - V(mean)) * (a - V(mean)); },
                              [](V& a, V& c) { return a + c; }, sum.data(), d) / d;
        const acc_t rstd = acc_t(1) / std::sqrt(var + eps);
        at::vec::convert(sum.data(), static_cast<scalar_t*>(M.u) + r * d, d);
        auto* st = static_cast<acc_t*>(M.stats) + 2 * r;
        st[0] = mean;
        st[1] = rstd;
        at::vec::map3([mean, rstd](V a, V g, V be) { return (a - V(mean)) * V(rstd) * g + be; },
                      tmp.data(), sum.data(), gamma.data(), beta.data(), d);
        at::vec::convert(tmp.data(), static_cast<scalar_t*>(M.y) + r * d, d);
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const CombineParams& P) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vectorized<acc_t>;
  const Drop attn = make_drop(P.attn_dropout), out = make_drop(P.out_dropout);
  const auto tasks = make_tasks(P);
  const int64_t d = P.m[0].d;
  const int64_t ntasks = static_cast<int64_t>(tasks.size());
  std::vector<acc_t> gamma(d);
  at::vec::convert(static_cast<const scalar_t*>(P.ln_weight), gamma.data(), d);
  // Per task: dgamma, dbeta, dbias_rows (of that task's modality).
  std::vector<acc_t> partial(ntasks * 3 * d, acc_t(0));

  at::parallel_for(0, ntasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<acc_t> g(d), xhat(d), dx(d), tmp(d);
    std::vector<std::vector<acc_t>> dc;
    std::vector<uint8_t> keep(d + 4);
    for (int64_t t = t0; t < t1; ++t) {
      const CombineModality& M = P.m[tasks[t].m];
      const int64_t b = tasks[t].b;
      acc_t* dgamma = partial.data() + t * 3 * d;
      acc_t* dbeta = dgamma + d;
      acc_t* dbias = dbeta + d;
      dc.resize(M.items.size());
      for (size_t k = 0; k < M.items.size(); ++k) dc[k].assign(M.items[k].heads * d, acc_t(0));
      for (int64_t i = 0; i < M.t; ++i) {
        const int64_t r = b * M.t + i;
        const auto* st = static_cast<const acc_t*>(M.stats) + 2 * r;
        const acc_t mean = st[0], rstd = st[1];
        at::vec::convert(static_cast<const scalar_t*>(M.grad_y) + r * d, g.data(), d);
        at::vec::convert(static_cast<const scalar_t*>(M.u) + r * d, xhat.data(), d);
        at::vec::map([mean, rstd](V a) { return (a - V(mean)) * V(rstd); }, xhat.data(),
                     xhat.data(), d);
        at::vec::map3([](V acc, V gg, V xh) { return acc + gg * xh; }, dgamma, dgamma, g.data(),
                      xhat.data(), d);
        at::vec::map2([](V acc, V gg) { return acc + gg; }, dbeta, dbeta, g.data(), d);
        at::vec::map2([](V gg, V w) { return gg * w; }, dx.data(), g.data(), gamma.data(), d);
        const acc_t mean_dx =
            at::vec::reduce_all<acc_t>([](V& a, V& c) { return a + c; }, dx.data(), d) / d;
        const acc_t mean_dx_xhat =
            at::vec::map2_reduce_all<acc_t>([](V a, V c) { return a * c; },
                                            [](V& a, V& c) { return a + c; }, dx.data(),
                                            xhat.data(), d) / d;
        const acc_t third = acc_t(1) / acc_t(3);
        at::vec::map2(
            [=](V a, V xh) { return V(rstd * third) * (a - V(mean_dx) - xh * V(mean_dx_xhat)); },
            dx.data(), dx.data(), xhat.data(), d);
        if (out.on) {
          out.philox.keep_row(cross_modal::output_stream(M.modality), b, i, 0, d, out.threshold,
                              keep.data());
          const acc_t s = static_cast<acc_t>(out.inv_keep);
          for (int64_t c = 0; c < d; ++c) dx[c] = keep[c] ? dx[c] * s : acc_t(0);
        }
        at::vec::convert(dx.data(), static_cast<scalar_t*>(M.grad_sum) + r * d, d);
        at::vec::map2([](V acc, V a) { return acc + a; }, dbias, dbias, dx.data(), d);
        for (size_t k = 0; k < M.items.size(); ++k) {
          const auto& it = M.items[k];
          MF_BOUNDS_CHECK(it.key_len[b] >= 0 && it.key_len[b] <= 1, "item key length");
          if (it.key_len[b] == 0) continue;
          for (int64_t h = 0; h < it.heads; ++h) {
            const acc_t kk = item_keep<acc_t>(attn, it, b, i, h);
            if (kk == acc_t(0)) continue;
            acc_t* dch = dc[k].data() + h * d;
            at::vec::map2([kk](V acc, V a) { return acc + V(kk) * a; }, dch, dch, dx.data(), d);
          }
        }
      }
      for (size_t k = 0; k < M.items.size(); ++k) {
        const int64_t hd = M.items[k].heads * d;
        at::vec::convert(dc[k].data(), static_cast<scalar_t*>(M.grad_c[k]) + b * hd, hd);
      }
    }
  });

  // Ordered reduction of the task partials.
  auto* dgamma = static_cast<acc_t*>(P.grad_ln_weight);
  auto* dbeta = static_cast<acc_t*>(P.grad_ln_bias);
  std::fill_n(dgamma, d, acc_t(0));
  std::fill_n(dbeta, d, acc_t(0));
  for (int m = 0; m < cross_modal::kNumModalities; ++m)
    if (P.m[m].grad_bias_rows) std::fill_n(static_cast<acc_t*>(P.m[m].grad_bias_rows), d, acc_t(0));
  for (int64_t t = 0; t < ntasks; ++t) {
    const acc_t* p = partial.data() + t * 3 * d;
    auto* dbias = static_cast<acc_t*>(P.m[tasks[t].m].grad_bias_rows);
    for (int64_t c = 0; c < d; ++c) {
      dgamma[c] += p[c];
      dbeta[c] += p[d + c];
      dbias[c] += p[2 * d + c];
    }
  }
}

}  // namespace

void cross_modal_combine_forward_cpu_kernel(at::ScalarType dtype, const CombineParams& params) {
  if (params.rng_out) cross_modal::store_rng(params.out_dropout.rng, params.rng_out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "cross_modal_combine_cpu",
                                  [&] { forward_impl<scalar_t>(params); });
}

void cross_modal_combine_backward_cpu_kernel(at::ScalarType dtype, const CombineParams& params) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype,
                                  "cross_modal_combine_backward_cpu",
                                  [&] { backward_impl<scalar_t>(params); });
}

}  // namespace MAVEN_FAST_CPU_NS
}  // namespace maven_fast
