# The feature report viewer in headless Chromium (tests/report/test_report.sh): a generated sample
# report, and a real one once the saefw binary has `saefw features`. Skipped where chromium is absent,
# except in CI. Screenshots of the index and a feature page: <build>/test_tmp/report/shots.
add_test(NAME report_browser
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/report/test_report.sh ${CMAKE_SOURCE_DIR}
          ${SAEFW_OUT}/${SAEFW_REPORT_SUBDIR} ${CMAKE_BINARY_DIR}/test_tmp/report)
set_tests_properties(report_browser PROPERTIES LABELS browser SKIP_RETURN_CODE 77 TIMEOUT 600
  ENVIRONMENT "SAEFW_BIN=$<TARGET_FILE:saefw>;OPENBLAS_NUM_THREADS=2")
