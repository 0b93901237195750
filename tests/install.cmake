# Installs into a temporary prefix and builds a plugin out of tree against it.
add_test(NAME install_smoke COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/install_smoke.sh
         ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/test_tmp/install_smoke)
