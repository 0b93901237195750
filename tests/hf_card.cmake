# The Hub client's model card against the engine's hook vocabulary (needs the saefw_hf library).
if(TARGET saefw_hf)
  add_executable(test_hf_card_hooks ${CMAKE_CURRENT_SOURCE_DIR}/hf_card_hooks.c)
  target_include_directories(test_hf_card_hooks PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(test_hf_card_hooks PRIVATE saefw_hf saefw_engine)
  add_test(NAME hf_card_hooks COMMAND test_hf_card_hooks)
endif()
