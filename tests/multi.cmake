# Several SAEs on one buffer (saefw.train{ saes = ... }): independence of the other SAEs, resume after
# SIGKILL, bad input; and the sweep experiment's frontier table and SVG.
add_test(NAME multi_train
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/multi_train.sh $<TARGET_FILE:saefw> ${CMAKE_BINARY_DIR}/test_tmp/multi_train)
set_tests_properties(multi_train PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/test_tmp/sweep_frontier)
add_test(NAME sweep_frontier COMMAND $<TARGET_FILE:saefw> run lua/sweep_frontier.lua WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(sweep_frontier PROPERTIES ENVIRONMENT "SAEFW_TEST_TMP=${CMAKE_BINARY_DIR}/test_tmp/sweep_frontier"
  PASS_REGULAR_EXPRESSION "sweep_frontier: all checks passed")
# The sweep experiment at a tiny size: its table and its SVG with a point per SAE.
add_test(NAME experiment_sweep
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_experiment.sh $<TARGET_FILE:saefw> ${CMAKE_BINARY_DIR}/test_tmp/exp_sweep
          "frontier plot \\(3 points\\)"
          ${CMAKE_SOURCE_DIR}/experiments/sweep.lua --num_tokens 1.5e4 --batch_size 256 --buffer_mult 16
          --values 1e-4,4e-4,1.6e-3 --eval_every 50 --recons_batches 1)
set_tests_properties(experiment_sweep PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")
# The same experiment as a k sweep of top-k SAEs: each SAE's L0 is its k.
add_test(NAME experiment_sweep_topk
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_experiment.sh $<TARGET_FILE:saefw> ${CMAKE_BINARY_DIR}/test_tmp/exp_sweep_topk
          "^k_16 +16 +16\\.00 "
          ${CMAKE_SOURCE_DIR}/experiments/sweep.lua --num_tokens 1.5e4 --batch_size 256 --buffer_mult 16
          --arch topk --param k --values 8,16,32 --eval_every 50 --recons_batches 1)
set_tests_properties(experiment_sweep_topk PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")
