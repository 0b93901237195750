# The shipped experiments, end to end on the bundled model at a small size (the scripts' own logic,
# not their full length): quickstart prints its reconstruction score, remove_rare_dir keeps every
# encoder column orthogonal to the rare direction (max |d . column| below 1e-6).
set(exp_run bash ${CMAKE_CURRENT_SOURCE_DIR}/run_experiment.sh $<TARGET_FILE:saefw>)
add_test(NAME experiment_quickstart
  COMMAND ${exp_run} ${CMAKE_BINARY_DIR}/test_tmp/exp_quickstart "reconstruction score -?[0-9.]+ \\(loss clean"
          ${CMAKE_SOURCE_DIR}/experiments/quickstart.lua --num_tokens 3e4 --batch_size 256 --buffer_mult 16
          --eval_every 50)
add_test(NAME experiment_remove_rare_dir
  COMMAND ${exp_run} ${CMAKE_BINARY_DIR}/test_tmp/exp_remove_rare_dir "max \\|d \\. column\\| = [0-9.]+e-(0[6-9]|[1-9][0-9])"
          ${CMAKE_SOURCE_DIR}/experiments/remove_rare_dir.lua --num_tokens 2e4 --batch_size 256 --buffer_mult 16
          --freq_batches 2 --rare_threshold 0.05)
set_tests_properties(experiment_quickstart experiment_remove_rare_dir PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")

# The quickstart on a Hub dataset in a private huggingface_hub cache: the bundled corpus as Parquet
# shards, converted into the token cache on first use.
add_test(NAME experiment_quickstart_dataset
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_dataset_experiment.sh $<TARGET_FILE:saefw>
          ${CMAKE_BINARY_DIR}/test_tmp/exp_dataset ${CMAKE_SOURCE_DIR})
set_tests_properties(experiment_quickstart_dataset PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")

# The April 2024 recipe (decoder-norm-weighted L1, no unit norm, clipping, schedules): it must run
# to its reconstruction score, and its checkpoint must say what it trained.
add_test(NAME experiment_april_update
  COMMAND ${exp_run} ${CMAKE_BINARY_DIR}/test_tmp/exp_april "reconstruction score -?[0-9.]+ \\(loss clean"
          ${CMAKE_SOURCE_DIR}/experiments/april_update.lua --num_tokens 3e4 --batch_size 256 --buffer_mult 16
          --eval_every 50)
add_test(NAME experiment_april_update_cfg
  COMMAND grep -q "\"scale_sparsity_penalty_by_decoder_norm\":[[:space:]]*true" ${CMAKE_BINARY_DIR}/test_tmp/exp_april/final/cfg.json)
set_tests_properties(experiment_april_update_cfg PROPERTIES DEPENDS experiment_april_update)
set_tests_properties(experiment_april_update PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")
