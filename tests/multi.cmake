# Several SAEs on one buffer (saefw.train{ saes = ... }): independence of the other SAEs, resume after
# SIGKILL, bad input; and the sweep experiment's frontier table and SVG.
add_test(NAME multi_train
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/multi_train.sh $<TARGET_FILE:saefw> ${CMAKE_BINARY_DIR}/test_tmp/multi_train)
set_tests_properties(multi_train PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
