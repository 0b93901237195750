# Plugins that declare something wrong, for test_plugin_files (beside the ones of plugins.cmake).
foreach(p broken_opttype)
  add_library(${p} MODULE ${CMAKE_CURRENT_SOURCE_DIR}/plugins/${p}.c)
  set_target_properties(${p} PROPERTIES PREFIX "" C_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/plugins)
  target_include_directories(${p} PRIVATE ${CMAKE_SOURCE_DIR}/plugins/include)
  add_dependencies(test_plugin_files ${p})
endforeach()
