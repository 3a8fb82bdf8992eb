// Element types of the CUDA launch interfaces (torch-free: the .cu files
// include it; the host glue maps at::ScalarType onto it).
#pragma once

namespace maven_fast::cuda {

enum class DType { F32, F64, F16, BF16 };

}  // namespace maven_fast::cuda
