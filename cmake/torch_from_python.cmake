# Locate libtorch through the Python interpreter that builds the wheel.
#
# We deliberately do not call find_package(Torch): on a CUDA build of torch its
# Caffe2 config insists on a CUDA toolkit (and nvrtc, cuDNN, ...) even when this
# project builds with MAVEN_FAST_CUDA=OFF. Asking torch itself for its include
# and library directories works for CPU and CUDA builds alike.
#
# Sets: TORCH_VERSION, TORCH_CUDA_VERSION ("" for CPU builds), TORCH_CXX11_ABI,
#       TORCH_INCLUDE_DIRS, TORCH_LIBRARY_DIR, and the imported target torch::cpu
#       (plus torch::cuda when torch is a CUDA build).
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
"import os, torch
print(torch.__version__)
print(torch.version.cuda or '')
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
root = os.path.dirname(torch.__file__)
print(os.path.join(root, 'include'))
print(os.path.join(root, 'include', 'torch', 'csrc', 'api', 'include'))
print(os.path.join(root, 'lib'))"
  OUTPUT_VARIABLE _torch_info
  ERROR_VARIABLE _torch_err
  RESULT_VARIABLE _torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR
    "maven_fast: cannot import torch with ${Python_EXECUTABLE}:\n${_torch_err}\n"
    "Install torch first and build without build isolation:\n"
    "  pip install torch==2.14.1 && pip install --no-build-isolation -e .")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 TORCH_VERSION)
list(GET _torch_info 1 TORCH_CUDA_VERSION)
list(GET _torch_info 2 TORCH_CXX11_ABI)
list(GET _torch_info 3 _torch_inc)
list(GET _torch_info 4 _torch_api_inc)
list(GET _torch_info 5 TORCH_LIBRARY_DIR)
set(TORCH_INCLUDE_DIRS "${_torch_inc};${_torch_api_inc}")
message(STATUS "maven_fast: torch ${TORCH_VERSION} (CUDA '${TORCH_CUDA_VERSION}', CXX11 ABI ${TORCH_CXX11_ABI}) at ${TORCH_LIBRARY_DIR}")

function(_maven_fast_torch_lib target)
  set(_libs "")
  foreach(_name IN LISTS ARGN)
    find_library(_lib_${_name} NAMES ${_name} PATHS "${TORCH_LIBRARY_DIR}" NO_DEFAULT_PATH REQUIRED)
    list(APPEND _libs "${_lib_${_name}}")
  endforeach()
  add_library(${target} INTERFACE IMPORTED)
  target_link_libraries(${target} INTERFACE ${_libs})
endfunction()

_maven_fast_torch_lib(torch::cpu c10 torch_cpu torch)
target_include_directories(torch::cpu SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_compile_definitions(torch::cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI})
if(TORCH_CUDA_VERSION)
  _maven_fast_torch_lib(torch::cuda c10_cuda torch_cuda)
endif()
