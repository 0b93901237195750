# Data parallel over MPI (engine/dist.c): test_dist under mpirun with 2 and 3 ranks (tests/mpirun.sh
# adds --oversubscribe and, as root, --allow-run-as-root), and training runs on 1, 2 and 3 ranks
# (tests/run_mpi.sh). Only when the build has MPI (SAEFW_MPI).
if(SAEFW_MPI)
  # OpenMPI's MPI_Init / MPI_Finalize leave allocations behind, many in components it has unloaded by
  # exit (no module name to suppress them by): under the sanitizers the ranks skip leak detection (the
  # single-process test_dist keeps it).
  set(saefw_mpi_env "MPIEXEC=${MPIEXEC_EXECUTABLE}")
  if(SAEFW_SANITIZE)
    list(APPEND saefw_mpi_env "ASAN_OPTIONS=detect_leaks=0")
  endif()
  foreach(np 2 3)
    add_test(NAME test_dist_np${np}
      COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpirun.sh ${np} $<TARGET_FILE:test_dist>
      WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(test_dist_np${np} PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=1;${saefw_mpi_env}"
      PROCESSORS ${np})
  endforeach()
endif()
if(SAEFW_MPI)
  add_test(NAME dist_training
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_mpi.sh $<TARGET_FILE:saefw> ${CMAKE_BINARY_DIR}/test_tmp/dist
            ${CMAKE_SOURCE_DIR})
  set_tests_properties(dist_training PROPERTIES ENVIRONMENT "${saefw_mpi_env}" PROCESSORS 3 TIMEOUT 900)
endif()
