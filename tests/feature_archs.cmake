# `saefw analyze` and `saefw features` on a checkpoint of every architecture trained on tiny-1l, with
# the report's content checked against the SAE's L0 (tests/run_feature_archs.sh); a transcoder is refused.
if(TARGET saefw)
  add_test(NAME feature_archs
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_feature_archs.sh $<TARGET_FILE:saefw>
            ${CMAKE_BINARY_DIR}/test_tmp/feature_archs)
  set_tests_properties(feature_archs PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2;HF_HUB_CACHE=${CMAKE_BINARY_DIR}/test_tmp/no_hub_cache"
    PASS_REGULAR_EXPRESSION "feature archs: all checks passed" TIMEOUT 300)
endif()
