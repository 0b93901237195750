# saefw.tokenizer from Lua: tests/lua/tokenizer.lua fails with a Lua error on any wrong id or message.
add_test(NAME lua_tokenizer COMMAND $<TARGET_FILE:saefw> run lua/tokenizer.lua WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(lua_tokenizer PROPERTIES ENVIRONMENT "HF_HUB_CACHE=${CMAKE_BINARY_DIR}/test_tmp/no_hub_cache"
  PASS_REGULAR_EXPRESSION "tokenizer.lua: all checks passed")
