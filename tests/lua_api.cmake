# The researcher-facing Lua API: tests/lua/api.lua fails with a Lua error on any wrong value or message.
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/test_tmp/lua_api)
add_test(NAME lua_api COMMAND $<TARGET_FILE:saefw> run lua/api.lua WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(lua_api PROPERTIES ENVIRONMENT "SAEFW_TEST_TMP=${CMAKE_BINARY_DIR}/test_tmp/lua_api;OPENBLAS_NUM_THREADS=1;HF_HUB_CACHE=${CMAKE_BINARY_DIR}/test_tmp/no_hub_cache"
  PASS_REGULAR_EXPRESSION "api.lua: all checks passed")
