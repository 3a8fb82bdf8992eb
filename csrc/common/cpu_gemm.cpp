// The CPU GEMM dispatch (cpu_gemm.h) and its test op maven_fast::_cpu_gemm_.
#include "common/cpu_gemm.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#include <string>

#include "common/bf16_gemm.h"
#include "common/fp32_gemm.h"
#include "common/skinny_gemm.h"

namespace maven_fast {
namespace {

// For profiles (bench/profile_cross_modal.py): a group's FLOPs, recorded as its input.
template <typename Problem>
int64_t group_flops(const std::vector<Problem>& problems) {
  int64_t flops = 0;
  for (const auto& p : problems) flops += 2 * p.m * p.n * p.k;
  return flops;
}

}  // namespace

void cpu_gemm_group(const std::vector<GemmCall>& calls) {
  std::vector<SkinnyGemm> skinny;
  std::vector<Bf16Gemm> bf16;
  std::vector<Fp32Gemm> fp32;
  at::ScalarType skinny_dtype = at::kFloat;
  for (const auto& c : calls) {
    SkinnyGemm s;
    Bf16Gemm p;
    Fp32Gemm f;
    if (skinny_problem(c.out, c.a, c.b, c.beta, c.alpha, c.bias, s)) {
      TORCH_INTERNAL_ASSERT(skinny.empty() || c.out.scalar_type() == skinny_dtype, "cpu_gemm_group: mixed dtypes");
      skinny_dtype = c.out.scalar_type();
      skinny.push_back(s);
    } else if (bf16_gemm_problem(c.out, c.a, c.b, c.beta, c.alpha, c.bias, p)) {
      bf16.push_back(p);
    } else if (fp32_gemm_problem(c.out, c.a, c.b, c.beta, c.alpha, c.bias, f)) {
      fp32.push_back(f);
    } else {
      aten_gemm(c);
    }
  }
  skinny_gemm_group(skinny_dtype, skinny);
  if (!bf16.empty()) {
    RECORD_FUNCTION("maven_fast::bf16_gemm", std::vector<c10::IValue>{c10::IValue(group_flops(bf16))});
    bf16_gemm_group(bf16);
  }
  if (!fp32.empty()) {
    RECORD_FUNCTION("maven_fast::fp32_gemm", std::vector<c10::IValue>{c10::IValue(group_flops(fp32))});
    fp32_gemm_group(fp32);
  }
}

void cpu_gemm(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta, double alpha,
              const at::Tensor& bias) {
  cpu_gemm_group({GemmCall{out, a, b, bias, beta, alpha}});
}

namespace {

// "out [sizes] (strides ...), a ..., b ..., dtype ..." for an error message.
std::string operands_text(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  return c10::str("out ", out.sizes(), " (strides ", out.strides(), "), a ", a.sizes(), " (strides ", a.strides(),
                  "), b ", b.sizes(), " (strides ", b.strides(), "), dtype ", out.scalar_type());
}

// kernel: "any" (the dispatch), "skinny", "bf16" or "fp32" (that kernel, else an error), "aten".
void cpu_gemm_op(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta, double alpha,
                 const std::optional<at::Tensor>& bias, c10::string_view kernel) {
  const at::Tensor bias_t = bias.has_value() ? *bias : at::Tensor();
  TORCH_CHECK(beta == 0.0 || beta == 1.0, "maven_fast::_cpu_gemm_: beta must be 0 or 1, got ", beta);
  TORCH_CHECK(!bias_t.defined() || beta == 0.0,
              "maven_fast::_cpu_gemm_: with a bias, beta must be 0 (the bias takes the place of out)");
  const std::string k(kernel);
  TORCH_CHECK(k == "any" || k == "skinny" || k == "bf16" || k == "fp32" || k == "aten",
              "maven_fast::_cpu_gemm_: kernel must be 'any', 'skinny', 'bf16', 'fp32' or 'aten', got '", k, "'");
  SkinnyGemm s;
  Bf16Gemm p;
  Fp32Gemm f;
  if (k == "skinny") {
    TORCH_CHECK(skinny_problem(out, a, b, beta, alpha, bias_t, s), "maven_fast::_cpu_gemm_: the skinny kernels do not take ",
                operands_text(out, a, b), ", beta ", beta);
    skinny_gemm_group(out.scalar_type(), {s});
  } else if (k == "bf16") {
    TORCH_CHECK(bf16_gemm_available(),
                "maven_fast::_cpu_gemm_: the bf16 kernels need an AVX512-BF16 CPU without AMX (and "
                "MAVEN_FAST_CPU_CAPABILITY unset or AVX512_BF16)");
    TORCH_CHECK(bf16_gemm_problem(out, a, b, beta, alpha, bias_t, p),
                "maven_fast::_cpu_gemm_: the bf16 kernels do not take ", operands_text(out, a, b));
    bf16_gemm_group({p});
  } else if (k == "fp32") {
    TORCH_CHECK(fp32_gemm_available(),
                "maven_fast::_cpu_gemm_: the fp32 kernels run on AVX2 CPUs (capability AVX2; this one: ",
                cpu_capability_name(cpu_capability()), ", or MAVEN_FAST_CPU_FP32_GEMM=0)");
    TORCH_CHECK(fp32_gemm_problem(out, a, b, beta, alpha, bias_t, f),
                "maven_fast::_cpu_gemm_: the fp32 kernels do not take ", operands_text(out, a, b));
    fp32_gemm_group({f});
  } else if (k == "aten") {
    aten_gemm(GemmCall{out, a, b, bias_t, beta, alpha});
  } else {
    cpu_gemm(out, a, b, beta, alpha, bias_t);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CPU, m) { m.impl("_cpu_gemm_", &cpu_gemm_op); }

}  // namespace maven_fast
