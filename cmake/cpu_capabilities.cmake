# Compile one CPU kernel source once per instruction set (DEFAULT, AVX2, AVX512)
# into separate namespaces; csrc/common/cpu_dispatch.h picks one at run time, so
# one wheel is both portable and vectorised. Kernel sources must wrap their code
# in `namespace MAVEN_FAST_CPU_NS` (see csrc/common/cpu_capability.h).
set(MAVEN_FAST_CPU_CAPABILITIES DEFAULT AVX2 AVX512)
set(_flags_DEFAULT "")
set(_flags_AVX2 -mavx2 -mfma -mf16c)
set(_flags_AVX512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c)

function(maven_fast_add_cpu_kernels target)
  foreach(_src IN LISTS ARGN)
    foreach(_cap IN LISTS MAVEN_FAST_CPU_CAPABILITIES)
      get_filename_component(_name "${_src}" NAME_WE)
      set(_obj "${target}_${_name}_${_cap}")
      add_library(${_obj} OBJECT "${_src}")
      target_link_libraries(${_obj} PRIVATE torch::cpu)
      target_include_directories(${_obj} PRIVATE "${PROJECT_SOURCE_DIR}/csrc")
      target_compile_definitions(${_obj} PRIVATE MAVEN_FAST_CPU_NS=cpu_${_cap}
        $<$<NOT:$<STREQUAL:${_cap},DEFAULT>>:CPU_CAPABILITY_${_cap}>
        CPU_CAPABILITY=${_cap})
      target_compile_options(${_obj} PRIVATE ${_flags_${_cap}})
      set_target_properties(${_obj} PROPERTIES POSITION_INDEPENDENT_CODE ON)
      target_sources(${target} PRIVATE $<TARGET_OBJECTS:${_obj}>)
    endforeach()
  endforeach()
endfunction()
