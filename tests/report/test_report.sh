#!/usr/bin/env bash
# The feature report viewer in a real browser (headless Chromium, tests/report/check_report.py):
# the sample report from make_sample_report.py (and its token-id variant), or the report folder in
# $SAEFW_REPORT_DIR; and, once $SAEFW_BIN has `saefw features`, a real report of a quickstart SAE
# trained on the bundled model. Screenshots go to WORK_DIR/shots.
#   test_report.sh SOURCE_DIR VIEWER_DIR WORK_DIR
# Exit 77 (skipped) when chromium is absent outside CI; in CI ($CI set) that is a failure.
set -u
src="$1"; viewer="$2"; work="$3"
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$chromium" ]; then
  if [ -n "${CI:-}" ]; then
    echo "FAIL: chromium is not installed, and CI must run this test (scripts/install-deps.sh installs it)"
    exit 1
  fi
  echo "SKIP: chromium is not installed (apt-get install chromium)"
  exit 77
fi
for f in index.html report.js report.css; do
  [ -f "$viewer/$f" ] || { echo "FAIL: the viewer's $f is not in $viewer (is the build done?)"; exit 1; }
done
rm -rf "$work" && mkdir -p "$work/shots"
failed=0

# check FOLDER LABEL: the browser checks, bounded in time whatever the browser does.
check() {
  timeout -k 5 60 python3 "$src/tests/report/check_report.py" --chromium "$chromium" \
    --report "$1" --shots "$work/shots" --label "$2" || { echo "FAIL: $2 ($1)"; failed=1; }
}

# sample FOLDER ARGS...: a generated report with the built viewer copied in, as saefw features does.
sample() {
  local dir="$1"; shift
  python3 "$src/tests/report/make_sample_report.py" --out "$dir" "$@" || { echo "FAIL: make_sample_report.py"; exit 1; }
  cp "$viewer/index.html" "$viewer/report.js" "$viewer/report.css" "$dir/"
}

if [ -n "${SAEFW_REPORT_DIR:-}" ]; then
  check "$SAEFW_REPORT_DIR" given
else
  sample "$work/sample"
  check "$work/sample" sample
  sample "$work/sample-ids" --ids --d_sae 96 --shard_size 32 --seed 2
  check "$work/sample-ids" ids
fi

# The real thing: a quickstart SAE on the bundled model and its report by `saefw features`.
bin="${SAEFW_BIN:-}"
model="$(dirname "${bin:-.}")/../share/saefw/models/tiny-1l"
if [ -n "$bin" ] && [ -x "$bin" ] && [ -d "$model" ] && "$bin" help 2>&1 | grep -Eq '^[[:space:]]+features([[:space:]]|$)'; then
  out=$("$bin" run "$src/experiments/quickstart.lua" --num_tokens 3e4 --buffer_mult 8 --eval_every 100000 --recons_batches 1 --report_tokens 0 --run_dir "$work/run" 2>&1)
  ckpt=$(printf '%s\n' "$out" | sed -n 's/^checkpoint: //p' | tail -n 1)
  if [ -z "$ckpt" ] || [ ! -d "$ckpt" ]; then
    printf '%s\n' "$out" | tail -n 15
    echo "FAIL: the quickstart wrote no checkpoint"; exit 1
  fi
  if ! "$bin" features "$ckpt" --out "$work/real" --tokens 50000 > "$work/features.log" 2>&1; then
    tail -n 15 "$work/features.log"
    echo "FAIL: saefw features $ckpt"; exit 1
  fi
  check "$work/real" real
else
  echo "note: no real report checked (needs \$SAEFW_BIN with a \`saefw features\` command and the bundled tiny-1l model): ${bin:-SAEFW_BIN unset}"
fi

[ $failed -eq 0 ] || exit 1
echo "report viewer checks passed; screenshots in $work/shots"
