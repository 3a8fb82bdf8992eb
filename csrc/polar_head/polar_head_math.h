// Polar head math, shared by the CPU and CUDA kernels (no torch headers, so
// nvcc compiles it without libtorch).
//
// Forward, per row n (x_n in R^D, W in R^{2xD}, b in R^2):
//   raw_k     = <x_n, W_k> + b_k                                 k = 0, 1
//   bounded:    theta = pi * tanh(raw_0),   I = sqrt(2) * sigmoid(raw_1)
//   unbounded:  theta = raw_0,              I = raw_1            (original MAVEN)
//   v = I cos(theta),  a = I sin(theta)
// Optional masked MSE over valid rows (m_n in {0,1}, n_valid = sum_n m_n):
//   L = sum_n m_n ((v_n - tv_n)^2 + (a_n - ta_n)^2) / (2 n_valid),  L = 0 if n_valid = 0
//
// Backward, with upstream gradients g_v, g_a, g_theta, g_I and g_L:
//   gv = g_v + g_L m_n (v - tv) / n_valid,   ga = g_a + g_L m_n (a - ta) / n_valid
//   d_theta = g_theta - gv a + ga v,         d_I = g_I + gv cos(theta) + ga sin(theta)
//   bounded:   d_raw_0 = d_theta pi (1 - tanh^2(raw_0)),  d_raw_1 = d_I sqrt(2) s (1 - s)
//   unbounded: d_raw_0 = d_theta,                          d_raw_1 = d_I
//   dx_n = d_raw_0 W_0 + d_raw_1 W_1,  dW_k = sum_n d_raw_k x_n,  db_k = sum_n d_raw_k
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace maven_fast::polar {

template <typename T> struct Const;
template <> struct Const<float> {
  static constexpr float pi = 3.14159265358979323846f;
  static constexpr float sqrt2 = 1.41421356237309504880f;
};
template <> struct Const<double> {
  static constexpr double pi = 3.14159265358979323846;
  static constexpr double sqrt2 = 1.41421356237309504880;
};

// Explicit float/double overloads: host <cmath> and CUDA differ in which
// unqualified overloads they provide.
MF_HOST_DEVICE float m_tanh(float x) { return tanhf(x); }
MF_HOST_DEVICE double m_tanh(double x) { return tanh(x); }
MF_HOST_DEVICE float m_sin(float x) { return sinf(x); }
MF_HOST_DEVICE double m_sin(double x) { return sin(x); }
MF_HOST_DEVICE float m_cos(float x) { return cosf(x); }
MF_HOST_DEVICE double m_cos(double x) { return cos(x); }
MF_HOST_DEVICE float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
MF_HOST_DEVICE double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

template <typename T>
struct Polar {
  T theta, intensity, valence, arousal, cos_t, sin_t;
};

template <typename T>
MF_HOST_DEVICE Polar<T> forward(T raw0, T raw1, bool bounded) {
  Polar<T> p;
  if (bounded) {
    p.theta = Const<T>::pi * m_tanh(raw0);
    p.intensity = Const<T>::sqrt2 * sigmoid(raw1);
  } else {
    p.theta = raw0;
    p.intensity = raw1;
  }
  p.cos_t = m_cos(p.theta);
  p.sin_t = m_sin(p.theta);
  p.valence = p.intensity * p.cos_t;
  p.arousal = p.intensity * p.sin_t;
  return p;
}

// Gradients of (raw0, raw1) given the gradients of (v, a, theta, I).
template <typename T>
MF_HOST_DEVICE void backward(T raw0, T raw1, bool bounded, const Polar<T>& p, T gv, T ga,
                             T g_theta, T g_intensity, T& d_raw0, T& d_raw1) {
  const T d_theta = g_theta - gv * p.arousal + ga * p.valence;
  const T d_intensity = g_intensity + gv * p.cos_t + ga * p.sin_t;
  if (bounded) {
    const T t = m_tanh(raw0);
    const T s = sigmoid(raw1);
    d_raw0 = d_theta * Const<T>::pi * (T(1) - t * t);
    d_raw1 = d_intensity * Const<T>::sqrt2 * s * (T(1) - s);
  } else {
    d_raw0 = d_theta;
    d_raw1 = d_intensity;
  }
}

}  // namespace maven_fast::polar
