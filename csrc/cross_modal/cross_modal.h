// Kernel interfaces of the six-pathway cross-modal block: the CPU kernels per
// CPU capability. The descriptors they take (cross_modal_descriptors.h) are
// torch-free, so the CUDA launchers (cross_modal_cuda.h) take the same ones.
// The host orchestration is in cross_modal.cpp; formulas are in the kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "common/cpu_capability.h"
#include "cross_modal/cross_modal_descriptors.h"
#include "cross_modal/cross_modal_math.h"

MAVEN_FAST_DECLARE_CPU_KERNEL(void cross_modal_attention_forward_cpu_kernel(
    at::ScalarType dtype, const std::vector<cross_modal::AttentionProblem>& problems,
    const cross_modal::DropoutParams& dropout))
MAVEN_FAST_DECLARE_CPU_KERNEL(void cross_modal_attention_backward_cpu_kernel(
    at::ScalarType dtype, const std::vector<cross_modal::AttentionProblem>& problems,
    const cross_modal::DropoutParams& dropout))
MAVEN_FAST_DECLARE_CPU_KERNEL(void cross_modal_combine_forward_cpu_kernel(
    at::ScalarType dtype, const cross_modal::CombineParams& params))
MAVEN_FAST_DECLARE_CPU_KERNEL(void cross_modal_combine_backward_cpu_kernel(
    at::ScalarType dtype, const cross_modal::CombineParams& params))
