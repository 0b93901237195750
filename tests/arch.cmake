# Issue 16's architectures through the Lua API: training, cfg.json in SAELens's names, saefw.load_sae,
# and a killed run resumed to the same bytes (tests/run_arch_checkpoints.sh).
if(TARGET saefw)
  add_test(NAME arch_checkpoints
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_arch_checkpoints.sh $<TARGET_FILE:saefw>
            ${CMAKE_BINARY_DIR}/test_tmp/arch_checkpoints)
  set_tests_properties(arch_checkpoints PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2;HF_HUB_CACHE=${CMAKE_BINARY_DIR}/test_tmp/no_hub_cache"
    PASS_REGULAR_EXPRESSION "arch checkpoints: all checks passed" TIMEOUT 300)
endif()
