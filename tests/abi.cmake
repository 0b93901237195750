# Plugins built against other versions of plugin.h for test_plugin_abi: the frozen ABI 2.0 header
# and a "newer" one with appended fields. Only tests/abi is on their include path.
foreach(p plugin_2_0 plugin_next)
  add_library(${p} MODULE ${CMAKE_CURRENT_SOURCE_DIR}/abi/${p}.c)
  set_target_properties(${p} PROPERTIES PREFIX "" C_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/plugins)
  target_include_directories(${p} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/abi)
  target_compile_options(${p} PRIVATE -Wmissing-prototypes)
  add_dependencies(test_plugin_abi ${p})
endforeach()
