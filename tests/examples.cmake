# examples/seed_recipe (the seed recipe through the C API, no Lua) at a tiny size: it runs, writes a
# final checkpoint, references no Lua symbol, and trains the same bytes as experiments/quickstart.lua
# with the same sizes.
if(TARGET seed_recipe AND TARGET saefw)
  add_test(NAME example_seed_recipe
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_example.sh $<TARGET_FILE:seed_recipe> $<TARGET_FILE:saefw>
            ${CMAKE_SOURCE_DIR}/experiments/quickstart.lua ${CMAKE_BINARY_DIR}/test_tmp/example_seed_recipe)
  set_tests_properties(example_seed_recipe PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2" TIMEOUT 300)
endif()
