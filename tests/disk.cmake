# Checkpoint writes on a full disk and a read-only folder (skipped where tmpfs cannot be mounted).
add_test(NAME disk_full COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/disk_full.sh $<TARGET_FILE:saefw>
         ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_BINARY_DIR}/test_tmp/disk_full)
set_tests_properties(disk_full PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "OPENBLAS_NUM_THREADS=2")
