# The quickstart ends with the feature report of the SAE it trained (a short run and a short analysis:
# the script's logic, not its full length); the report's data are checked by test_features.
add_test(NAME features_quickstart_report
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_experiment.sh $<TARGET_FILE:saefw> ${CMAKE_BINARY_DIR}/test_tmp/features_quickstart
          "feature report \\(4096 tokens, [0-9]+ of 2048 features dead\\): .*/features_quickstart/report/index\\.html"
          ${CMAKE_SOURCE_DIR}/experiments/quickstart.lua --num_tokens 1e4 --batch_size 256 --buffer_mult 8
          --eval_every 1000 --recons_batches 1 --report_tokens 4096)
set_tests_properties(features_quickstart_report PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")
