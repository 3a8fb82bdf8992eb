// Host side of the skinny GEMMs (skinny_gemm.h): which calls they take, and
// ATen for the others.
#include "common/skinny_gemm.h"


#include <ATen/ATen.h>
#include <torch/library.h>

namespace maven_fast {
namespace {

bool unit_stride(const at::Tensor& t, int64_t dim) { return t.size(dim) == 1 || t.stride(dim) == 1; }

void aten_gemm(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
               double alpha, const at::Tensor& bias) {
  at::Tensor o = out;  // the _out functions take a non-const reference
  if (bias.defined()) {
    TORCH_INTERNAL_ASSERT(beta == 0.0, "gemm: a bias replaces beta * out");
    at::addmm_out(o, bias, a, b, 1.0, alpha);
  } else if (beta != 0.0) {
    at::addmm_out(o, out, a, b, beta, alpha);
  } else if (alpha == 1.0) {
    at::mm_out(o, a, b);
  } else {
    at::addmm_out(o, out, a, b, 0.0, alpha);
  }
}

}  // namespace

bool skinny_problem(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                    double alpha, const at::Tensor& bias, SkinnyGemm& p) {
  const auto dt = out.scalar_type();
  if (!out.is_cpu() || out.dim() != 2 || a.dim() != 2 || b.dim() != 2) return false;
  if (dt != at::kFloat && dt != at::kBFloat16 && dt != at::kHalf) return false;
  if (a.scalar_type() != dt || b.scalar_type() != dt || !a.is_cpu() || !b.is_cpu()) return false;
  if (beta != 0.0 && beta != 1.0) return false;
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0 || k == 0 || b.size(0) != k || out.size(0) != m || out.size(1) != n) return false;
  if (!unit_stride(out, 1)) return false;
  if (bias.defined() && (beta != 0.0 || bias.dim() != 1 || bias.size(0) != n || !unit_stride(bias, 0) ||
                         bias.scalar_type() != dt || !bias.is_cpu()))
    return false;
  p = SkinnyGemm{};
  p.m = m;
  p.n = n;
  p.k = k;
  p.c = out.data_ptr();
  p.ldc = out.stride(0);
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.alpha = static_cast<float>(alpha);
  p.accumulate = beta != 0.0;
  p.a = a.data_ptr();
  p.b = b.data_ptr();
  if (m <= kSkinnyMax && unit_stride(a, 1)) {
    p.lda = a.stride(0);
    if (unit_stride(b, 0) && b.stride(1) >= k) {  // b = W^T, W [n, k] rows
      p.kind = SkinnyKind::kNT;
      p.ldb = b.stride(1);
      return true;
    }
    if (!bias.defined() && unit_stride(b, 1)) {
      p.kind = SkinnyKind::kNN;
      p.ldb = b.stride(0);
      return true;
    }
  }
  if (k <= kSkinnyMax && !bias.defined() && unit_stride(a, 0) && unit_stride(b, 1)) {
    p.kind = SkinnyKind::kTN;  // a = G^T, G [k, m] rows
    p.lda = a.stride(1);
    p.ldb = b.stride(0);
    return true;
  }
  return false;
}

void skinny_gemm_group(at::ScalarType dtype, const std::vector<SkinnyGemm>& problems) {
  if (problems.empty()) return;
  MAVEN_FAST_CPU_DISPATCH(skinny_gemm_cpu_kernel, dtype, problems);
}

void cpu_gemm(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
              double alpha, const at::Tensor& bias) {
  SkinnyGemm p;
  if (skinny_problem(out, a, b, beta, alpha, bias, p)) {
    skinny_gemm_group(out.scalar_type(), {p});
  } else {
    aten_gemm(out, a, b, beta, alpha, bias);
  }
}

namespace {

void cpu_gemm_op(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta,
                       double alpha, const std::optional<at::Tensor>& bias, bool require_skinny) {
  const at::Tensor bias_t = bias.has_value() ? *bias : at::Tensor();
  TORCH_CHECK(beta == 0.0 || beta == 1.0, "maven_fast::_cpu_gemm: beta must be 0 or 1, got ", beta);
  TORCH_CHECK(!bias_t.defined() || beta == 0.0,
              "maven_fast::_cpu_gemm: with a bias, beta must be 0 (the bias takes the place of out)");
  SkinnyGemm p;
  TORCH_CHECK(!require_skinny || skinny_problem(out, a, b, beta, alpha, bias_t, p),
              "maven_fast::_cpu_gemm: the skinny kernels do not take out ", out.sizes(), ", a ",
              a.sizes(), " (strides ", a.strides(), "), b ", b.sizes(), " (strides ", b.strides(),
              "), beta ", beta, ", dtype ", out.scalar_type());
  cpu_gemm(out, a, b, beta, alpha, bias_t);
}

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CPU, m) { m.impl("_cpu_gemm_", &cpu_gemm_op); }

}  // namespace maven_fast
