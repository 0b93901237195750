# Symbol hygiene of the binary and the engine's libraries (tests/check_symbols.sh).
if(TARGET saefw)
  add_test(NAME symbols COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_symbols.sh $<TARGET_FILE:saefw>
           $<TARGET_FILE:saefw_engine> $<TARGET_FILE:saefw_core> $<TARGET_FILE:saefw_util>)
endif()
