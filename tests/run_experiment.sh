#!/usr/bin/env bash
# Run a shipped experiment in an empty run folder; pass when it exits 0 and its output matches a pattern.
#   run_experiment.sh SAEFW RUN_DIR PATTERN SCRIPT [--key value ...]
set -u
bin="$1"; run_dir="$2"; pattern="$3"; script="$4"; shift 4
rm -rf "$run_dir"
out=$("$bin" run "$script" --run_dir "$run_dir" "$@" 2>&1)
rc=$?
printf '%s\n' "$out" | grep -v '^step ' | tail -n 25
[ $rc -eq 0 ] || { echo "FAIL: exit status $rc"; exit 1; }
printf '%s\n' "$out" | grep -Eq "$pattern" || { echo "FAIL: no line matches: $pattern"; exit 1; }
echo "passed"
