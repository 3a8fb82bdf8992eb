// Host side of the skinny GEMMs (skinny_gemm.h): which calls they take.
#include "common/skinny_gemm.h"

#include <ATen/ATen.h>

namespace maven_fast {
namespace {

bool unit_stride(const at::Tensor& t, int64_t dim) { return t.size(dim) == 1 || t.stride(dim) == 1; }

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

}  // namespace maven_fast
