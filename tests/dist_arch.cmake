# Data parallel for jumprelu and gated: 1 vs 2 ranks agree, topk is refused (tests/run_mpi_arch.sh).
# Only when the build has MPI (SAEFW_MPI).
if(SAEFW_MPI)
  set(saefw_mpi_arch_env "MPIEXEC=${MPIEXEC_EXECUTABLE}")
  if(SAEFW_SANITIZE)
    list(APPEND saefw_mpi_arch_env "ASAN_OPTIONS=detect_leaks=0")
  endif()
  add_test(NAME dist_training_arch
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_mpi_arch.sh $<TARGET_FILE:saefw>
            ${CMAKE_BINARY_DIR}/test_tmp/dist_arch)
  set_tests_properties(dist_training_arch PROPERTIES ENVIRONMENT "${saefw_mpi_arch_env}" PROCESSORS 2 TIMEOUT 600
                       PASS_REGULAR_EXPRESSION "run_mpi_arch: all checks passed")
endif()
