# The transcoder experiment end to end on the bundled model at a small size: the buffer holds
# ln2.hook_normalized and hook_mlp_out, and the reconstruction score replaces hook_mlp_out.
add_test(NAME experiment_transcoder
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_experiment.sh $<TARGET_FILE:saefw> ${CMAKE_BINARY_DIR}/test_tmp/exp_transcoder
          "transcoder reconstruction score -?[0-9.]+ \\(loss clean"
          ${CMAKE_SOURCE_DIR}/experiments/transcoder.lua --num_tokens 3e4 --batch_size 256 --buffer_mult 16
          --eval_every 50)
set_tests_properties(experiment_transcoder PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")
