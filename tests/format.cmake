# The C sources follow .clang-format (tests/check_format.sh; skipped without clang-format).
add_test(NAME format COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_format.sh)
set_tests_properties(format PROPERTIES SKIP_RETURN_CODE 77)
