// Declarations of the dropout kernels (CPU, per CPU capability).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "common/cpu_capability.h"

// mask (contiguous, floating) = [Philox word of element i >= threshold] * scale
// for every element i (key = seed, counter = (lo32(i / 4), hi32(i / 4), 0, 0),
// word i % 4; common/philox.h).
MAVEN_FAST_DECLARE_CPU_KERNEL(void dropout_mask_cpu_kernel(at::Tensor& mask, uint64_t seed, uint32_t threshold,
                                                           double scale))
