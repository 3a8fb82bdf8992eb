// CPU polar head: one parallel pass over the rows for the forward and one for
// the backward (at::parallel_for over fixed row chunks, at::vec SIMD dot
// products). Compiled once per CPU capability; see common/cpu_capability.h.
//
// Reductions (loss, dW, db) use per-chunk partials summed in chunk order, and
// the chunking depends only on N, so results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <vector>

#include "polar_head/polar_head.h"
#include "polar_head/polar_head_math.h"

namespace maven_fast {
namespace MAVEN_FAST_CPU_NS {
namespace {

using at::vec::Vectorized;

// Rows per chunk: at least 64, and never more than 256 chunks.
int64_t chunk_rows(int64_t n) { return std::max<int64_t>(64, (n + 255) / 256); }

// Loads Vectorized<acc_t>::size() elements of x starting at x[k] as acc_t.
template <typename scalar_t, typename acc_t>
struct Loader {
  static constexpr int64_t kStep = Vectorized<acc_t>::size();
  static Vectorized<acc_t> load(const scalar_t* p) { return Vectorized<acc_t>::loadu(p); }
};
template <typename scalar_t>
  requires(at::is_reduced_floating_point_v<scalar_t>)
struct Loader<scalar_t, float> {
  static constexpr int64_t kStep = Vectorized<float>::size();
  static Vectorized<float> load(const scalar_t* p) {
    // Load half a vector of 16-bit values and widen them.
    return std::get<0>(at::vec::convert_to_float<scalar_t>(
        Vectorized<scalar_t>::loadu(p, static_cast<int64_t>(kStep))));
  }
};

// r0 = <x, w0>, r1 = <x, w1> accumulated in acc_t.
template <typename scalar_t, typename acc_t>
void dot2(const scalar_t* x, const acc_t* w0, const acc_t* w1, int64_t d, acc_t& r0, acc_t& r1) {
  using L = Loader<scalar_t, acc_t>;
  using V = Vectorized<acc_t>;
  V s0(acc_t(0)), s1(acc_t(0));
  int64_t k = 0;
  for (; k + L::kStep <= d; k += L::kStep) {
    const V xv = L::load(x + k);
    s0 = at::vec::fmadd(xv, V::loadu(w0 + k), s0);
    s1 = at::vec::fmadd(xv, V::loadu(w1 + k), s1);
  }
  r0 = at::vec::vec_reduce_all<acc_t>([](V& a, V& b) { return a + b; }, s0);
  r1 = at::vec::vec_reduce_all<acc_t>([](V& a, V& b) { return a + b; }, s1);
  for (; k < d; ++k) {
    const acc_t xv = static_cast<acc_t>(x[k]);
    r0 += xv * w0[k];
    r1 += xv * w1[k];
  }
}

// dx = d0 w0 + d1 w1 (written as scalar_t); acc0 += d0 x, acc1 += d1 x.
template <typename scalar_t, typename acc_t>
void row_backward(const scalar_t* x, const acc_t* w0, const acc_t* w1, int64_t d, acc_t d0,
                  acc_t d1, scalar_t* dx, acc_t* acc0, acc_t* acc1) {
  using L = Loader<scalar_t, acc_t>;
  using V = Vectorized<acc_t>;
  const V vd0(d0), vd1(d1);
  int64_t k = 0;
  for (; k + L::kStep <= d; k += L::kStep) {
    const V xv = L::load(x + k);
    const V g = at::vec::fmadd(vd0, V::loadu(w0 + k), vd1 * V::loadu(w1 + k));
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      g.store(dx + k);
    } else {
      acc_t tmp[L::kStep];
      g.store(tmp);
      for (int64_t j = 0; j < L::kStep; ++j) dx[k + j] = static_cast<scalar_t>(tmp[j]);
    }
    at::vec::fmadd(vd0, xv, V::loadu(acc0 + k)).store(acc0 + k);
    at::vec::fmadd(vd1, xv, V::loadu(acc1 + k)).store(acc1 + k);
  }
  for (; k < d; ++k) {
    const acc_t xv = static_cast<acc_t>(x[k]);
    dx[k] = static_cast<scalar_t>(d0 * w0[k] + d1 * w1[k]);
    acc0[k] += d0 * xv;
    acc1[k] += d1 * xv;
  }
}

template <typename acc_t>
std::vector<acc_t> weights_as_acc(const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t d = weight.size(1);
  std::vector<acc_t> w(2 * d + 2);
  const at::Tensor wf = weight.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const at::Tensor bf = bias.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  std::copy(wf.data_ptr<acc_t>(), wf.data_ptr<acc_t>() + 2 * d, w.begin());
  w[2 * d] = bf.data_ptr<acc_t>()[0];
  w[2 * d + 1] = bf.data_ptr<acc_t>()[1];
  return w;
}

template <typename scalar_t>
void forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  const std::optional<at::Tensor>& target, const std::optional<at::Tensor>& mask,
                  bool bounded, at::Tensor& va, at::Tensor& ti, at::Tensor& loss,
                  at::Tensor& n_valid) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = x.size(0), d = x.size(1), ldx = x.stride(0);
  const auto w = weights_as_acc<acc_t>(weight, bias);
  const acc_t *w0 = w.data(), *w1 = w.data() + d;
  const acc_t b0 = w[2 * d], b1 = w[2 * d + 1];
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* vap = va.data_ptr<scalar_t>();
  scalar_t* tip = ti.data_ptr<scalar_t>();
  const acc_t* tp = target ? target->const_data_ptr<acc_t>() : nullptr;
  const bool* mp = (target && mask) ? mask->const_data_ptr<bool>() : nullptr;

  const int64_t rows = chunk_rows(n);
  const int64_t chunks = (n + rows - 1) / rows;
  std::vector<acc_t> sse(chunks, acc_t(0)), count(chunks, acc_t(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      acc_t s = 0, cnt = 0;
      for (int64_t i = c * rows, e = std::min(n, i + rows); i < e; ++i) {
        acc_t r0, r1;
        dot2<scalar_t, acc_t>(xp + i * ldx, w0, w1, d, r0, r1);
        const auto p = polar::forward<acc_t>(r0 + b0, r1 + b1, bounded);
        vap[2 * i] = static_cast<scalar_t>(p.valence);
        vap[2 * i + 1] = static_cast<scalar_t>(p.arousal);
        tip[2 * i] = static_cast<scalar_t>(p.theta);
        tip[2 * i + 1] = static_cast<scalar_t>(p.intensity);
        if (tp && (!mp || mp[i])) {
          // The loss sees the outputs as stored, like the eager reference.
          const acc_t ev = static_cast<acc_t>(vap[2 * i]) - tp[2 * i];
          const acc_t ea = static_cast<acc_t>(vap[2 * i + 1]) - tp[2 * i + 1];
          s += ev * ev + ea * ea;
          cnt += 1;
        }
      }
      sse[c] = s;
      count[c] = cnt;
    }
  });
  acc_t s = 0, cnt = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    s += sse[c];
    cnt += count[c];
  }
  loss.fill_(cnt > 0 ? s / (acc_t(2) * cnt) : acc_t(0));
  n_valid.fill_(cnt);
}

template <typename scalar_t>
void backward_impl(const std::optional<at::Tensor>& grad_va,
                   const std::optional<at::Tensor>& grad_ti,
                   const std::optional<at::Tensor>& grad_loss, const at::Tensor& x,
                   const at::Tensor& weight, const at::Tensor& bias,
                   const std::optional<at::Tensor>& target, const std::optional<at::Tensor>& mask,
                   const at::Tensor& n_valid, bool bounded, at::Tensor& grad_x,
                   at::Tensor& grad_weight, at::Tensor& grad_bias) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = x.size(0), d = x.size(1), ldx = x.stride(0);
  const auto w = weights_as_acc<acc_t>(weight, bias);
  const acc_t *w0 = w.data(), *w1 = w.data() + d;
  const acc_t b0 = w[2 * d], b1 = w[2 * d + 1];
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gvap = grad_va ? grad_va->const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* gtip = grad_ti ? grad_ti->const_data_ptr<scalar_t>() : nullptr;
  const acc_t* tp = target ? target->const_data_ptr<acc_t>() : nullptr;
  const bool* mp = (target && mask) ? mask->const_data_ptr<bool>() : nullptr;
  // Loss gradient scale g_L / n_valid (0 when there is no loss or no valid row).
  acc_t loss_scale = 0;
  if (tp && grad_loss) {
    const acc_t nv = n_valid.item<acc_t>();
    if (nv > 0) loss_scale = grad_loss->item<acc_t>() / nv;
  }
  scalar_t* dxp = grad_x.data_ptr<scalar_t>();

  const int64_t rows = chunk_rows(n);
  const int64_t chunks = (n + rows - 1) / rows;
  const int64_t stride = 2 * d + 2;  // per chunk: dW0[d], dW1[d], db0, db1
  std::vector<acc_t> partial(chunks * stride, acc_t(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      acc_t* acc = partial.data() + c * stride;
      for (int64_t i = c * rows, e = std::min(n, i + rows); i < e; ++i) {
        const scalar_t* xi = xp + i * ldx;
        acc_t r0, r1;
        dot2<scalar_t, acc_t>(xi, w0, w1, d, r0, r1);
        r0 += b0;
        r1 += b1;
        const auto p = polar::forward<acc_t>(r0, r1, bounded);
        acc_t gv = gvap ? static_cast<acc_t>(gvap[2 * i]) : acc_t(0);
        acc_t ga = gvap ? static_cast<acc_t>(gvap[2 * i + 1]) : acc_t(0);
        const acc_t gth = gtip ? static_cast<acc_t>(gtip[2 * i]) : acc_t(0);
        const acc_t gin = gtip ? static_cast<acc_t>(gtip[2 * i + 1]) : acc_t(0);
        if (loss_scale != acc_t(0) && (!mp || mp[i])) {
          gv += loss_scale * (static_cast<acc_t>(static_cast<scalar_t>(p.valence)) - tp[2 * i]);
          ga += loss_scale * (static_cast<acc_t>(static_cast<scalar_t>(p.arousal)) - tp[2 * i + 1]);
        }
        acc_t d0, d1;
        polar::backward<acc_t>(r0, r1, bounded, p, gv, ga, gth, gin, d0, d1);
        row_backward<scalar_t, acc_t>(xi, w0, w1, d, d0, d1, dxp + i * d, acc, acc + d);
        acc[2 * d] += d0;
        acc[2 * d + 1] += d1;
      }
    }
  });
  // Sum the chunk partials in order (deterministic), then cast to the parameter dtype.
  std::vector<acc_t> total(stride, acc_t(0));
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t k = 0; k < stride; ++k) total[k] += partial[c * stride + k];
  scalar_t* gw = grad_weight.data_ptr<scalar_t>();
  for (int64_t k = 0; k < 2 * d; ++k) gw[k] = static_cast<scalar_t>(total[k]);
  scalar_t* gb = grad_bias.data_ptr<scalar_t>();
  gb[0] = static_cast<scalar_t>(total[2 * d]);
  gb[1] = static_cast<scalar_t>(total[2 * d + 1]);
}

}  // namespace

void polar_head_forward_cpu_kernel(const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& bias, const std::optional<at::Tensor>& target,
                                   const std::optional<at::Tensor>& mask, bool bounded,
                                   at::Tensor& valence_arousal, at::Tensor& theta_intensity,
                                   at::Tensor& loss, at::Tensor& n_valid) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polar_head_cpu", [&] {
    forward_impl<scalar_t>(x, weight, bias, target, mask, bounded, valence_arousal,
                           theta_intensity, loss, n_valid);
  });
}

void polar_head_backward_cpu_kernel(
    const std::optional<at::Tensor>& grad_va, const std::optional<at::Tensor>& grad_ti,
    const std::optional<at::Tensor>& grad_loss, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const std::optional<at::Tensor>& target,
    const std::optional<at::Tensor>& mask, const at::Tensor& n_valid, bool bounded,
    at::Tensor& grad_x, at::Tensor& grad_weight, at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polar_head_backward_cpu", [&] {
    backward_impl<scalar_t>(grad_va, grad_ti, grad_loss, x, weight, bias, target, mask, n_valid,
                            bounded, grad_x, grad_weight, grad_bias);
  });
}

}  // namespace MAVEN_FAST_CPU_NS
}  // namespace maven_fast
