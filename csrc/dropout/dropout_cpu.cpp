// maven_fast::dropout_mask on the CPU: the scaled keep mask of dropout,
//
//   mask_i = [w_i >= threshold(p)] / (1 - p),   w_i = word i % 4 of
//   Philox(key = seed, counter = (lo32(i / 4), hi32(i / 4), 0, 0))
//
// for every element i of `like` (flattened), in like's dtype; dropout(x) =
// x * mask. The mask depends on the seed alone, not on the thread count.
// torch's CPU bernoulli_ draws one element at a time on one thread (a 2-core
// AVX2 EPYC: 8.5 ms for 0.5 M elements); the kernel is dropout_cpu_kernel.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/philox.h"
#include "dropout/dropout.h"

namespace maven_fast {
namespace {

at::Tensor dropout_mask_cpu(const at::Tensor& like, double p, const at::Tensor& seed) {
  constexpr const char* op = "maven_fast::dropout_mask";
  TORCH_CHECK(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p, " (p = 1 drops everything: multiply by 0)");
  TORCH_CHECK(seed.numel() == 1 && seed.scalar_type() == at::kLong && seed.is_cpu(), op,
              ": `seed` must be one int64 CPU element, got ", seed.scalar_type(), " of shape ", seed.sizes(),
              " on ", seed.device());
  TORCH_CHECK(like.is_cpu() && like.is_floating_point(), op, ": `like` must be a floating CPU tensor, got ",
              like.scalar_type(), " on ", like.device());
  at::Tensor mask = at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
  if (mask.numel() > 0) {
    MAVEN_FAST_CPU_DISPATCH(dropout_mask_cpu_kernel, mask, static_cast<uint64_t>(seed.item<int64_t>()),
                            dropout_threshold(p), 1.0 / (1.0 - p));
  }
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(maven_fast, CPU, m) { m.impl("dropout_mask", &dropout_mask_cpu); }

}  // namespace maven_fast
