# The ReLU SAE's 2024-recipe and transcoder options through the Lua API (tests/lua/sae_variants.lua).
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/test_tmp/sae_variants)
add_test(NAME lua_sae_variants COMMAND $<TARGET_FILE:saefw> run lua/sae_variants.lua
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(lua_sae_variants PROPERTIES ENVIRONMENT
  "SAEFW_TEST_TMP=${CMAKE_BINARY_DIR}/test_tmp/sae_variants;OPENBLAS_NUM_THREADS=1"
  PASS_REGULAR_EXPRESSION "sae_variants.lua: all checks passed")
