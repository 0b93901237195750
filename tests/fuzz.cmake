# Fuzz targets for every parser of outside data (tests/fuzz/fuzz_<target>.c).
# Always, with any compiler: fuzz_replay_<target>, the target with a plain main() (replay_main.c)
# that ctest runs over the committed seed corpus tests/fuzz/corpus/<target>/ and the crash inputs
# kept as regression tests in tests/fuzz/crashes/<target>/. Inputs of bugs not fixed yet wait in
# tests/fuzz/pending/<target>/, which ctest does not run.
# With -DSAEFW_FUZZ=ON and clang: fuzz_<target>, linked with libFuzzer, AddressSanitizer and
# UBSan, and the engine and Hub libraries instrumented the same way; scripts/fuzz.sh runs them.
option(SAEFW_FUZZ "Build the libFuzzer targets (clang with libclang-rt-14-dev)" OFF)

set(SAEFW_FUZZ_DIR ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
set(SAEFW_FUZZ_ENGINE_TARGETS safetensors npy torch_zip pickle checkpoint_cfg model_cfg tokens parquet tokenizer_json)
set(SAEFW_FUZZ_HF_TARGETS hub hf_card)
set(SAEFW_FUZZ_TARGETS ${SAEFW_FUZZ_ENGINE_TARGETS})
if(TARGET saefw_hf)
  list(APPEND SAEFW_FUZZ_TARGETS ${SAEFW_FUZZ_HF_TARGETS})
endif()

function(saefw_fuzz_sources exe t)
  target_sources(${exe} PRIVATE ${SAEFW_FUZZ_DIR}/fuzz_${t}.c ${SAEFW_FUZZ_DIR}/fuzz_common.c)
  target_include_directories(${exe} PRIVATE ${SAEFW_FUZZ_DIR})
  target_compile_definitions(${exe} PRIVATE SAEFW_FUZZ_FIXTURES="${CMAKE_CURRENT_SOURCE_DIR}/fixtures")
  target_link_libraries(${exe} PRIVATE saefw_engine)
  if(t IN_LIST SAEFW_FUZZ_HF_TARGETS)
    target_link_libraries(${exe} PRIVATE saefw_hf)
  endif()
endfunction()

if(SAEFW_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SAEFW_FUZZ=ON needs clang (libFuzzer), but the C compiler is ${CMAKE_C_COMPILER_ID}: "
      "configure a separate build folder with CC=clang, or run scripts/fuzz.sh, which does that. "
      "The replay tests (ctest -R fuzz) need no option and build with any compiler.")
  endif()
  include(CheckCSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer,address,undefined")
  set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=fuzzer,address,undefined")
  check_c_source_compiles("#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }" SAEFW_HAVE_LIBFUZZER)
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
  if(NOT SAEFW_HAVE_LIBFUZZER)
    message(FATAL_ERROR "SAEFW_FUZZ=ON: clang cannot link -fsanitize=fuzzer; install libclang-rt-14-dev "
      "(apt-get install libclang-rt-14-dev) or run scripts/fuzz.sh")
  endif()
  # Coverage feedback and sanitizers inside the code under test, not only in the harnesses. UBSan
  # reports are recoverable so that tests/fuzz/ubsan_pending.supp can let known bugs pass;
  # scripts/fuzz.sh sets halt_on_error, so any other report still stops the input as a crash.
  set(SAEFW_FUZZ_CFLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
      -fsanitize-recover=undefined -g)
  foreach(lib saefw_util saefw_core saefw_engine saefw_hf)
    if(TARGET ${lib})
      target_compile_options(${lib} PRIVATE ${SAEFW_FUZZ_CFLAGS})
      target_link_options(${lib} INTERFACE -fsanitize=address,undefined)
    endif()
  endforeach()
  foreach(t ${SAEFW_FUZZ_TARGETS})
    add_executable(fuzz_${t})
    saefw_fuzz_sources(fuzz_${t} ${t})
    target_compile_options(fuzz_${t} PRIVATE ${SAEFW_FUZZ_CFLAGS})
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,address,undefined)
    set_target_properties(fuzz_${t} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  endforeach()
endif()

foreach(t ${SAEFW_FUZZ_TARGETS})
  add_executable(fuzz_replay_${t} ${SAEFW_FUZZ_DIR}/replay_main.c)
  saefw_fuzz_sources(fuzz_replay_${t} ${t})
  set_target_properties(fuzz_replay_${t} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz_replay_${t}
    COMMAND fuzz_replay_${t} ${SAEFW_FUZZ_DIR}/corpus/${t} ${SAEFW_FUZZ_DIR}/crashes/${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 300 LABELS fuzz
    ENVIRONMENT "TMPDIR=${CMAKE_BINARY_DIR}/test_tmp;OPENBLAS_NUM_THREADS=1")
endforeach()
