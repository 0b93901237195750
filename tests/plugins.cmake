# Deliberately broken plugins for test_plugin_loader, plus a file that is not a shared object, and
# nan_adam, the mutant that test_optimizers' checks must fail on.
set(SAEFW_TEST_PLUGIN_DIR ${CMAKE_BINARY_DIR}/tests/plugins)
foreach(p broken_noentry broken_abi broken_init broken_size broken_options nan_adam)
  add_library(${p} MODULE ${CMAKE_CURRENT_SOURCE_DIR}/plugins/${p}.c)
  set_target_properties(${p} PROPERTIES PREFIX "" C_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY ${SAEFW_TEST_PLUGIN_DIR})
  target_include_directories(${p} PRIVATE ${CMAKE_SOURCE_DIR}/plugins/include)
  target_compile_options(${p} PRIVATE -Wmissing-prototypes)
  add_dependencies(test_plugin_loader ${p})
  add_dependencies(test_optimizers ${p})
endforeach()
file(WRITE ${SAEFW_TEST_PLUGIN_DIR}/not_a_plugin.so "this is a text file, not a shared object\n")
