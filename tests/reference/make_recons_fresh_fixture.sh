#!/usr/bin/env bash
# The reconstruction-score metrics of the seed's evaluation (fresh random rows at every eval), as a
# build from before the fixed held-out set printed them: test_recons_eval checks that
# recons_eval = "fresh" reproduces them. Run with the old build's binary and its own quickstart:
#   tests/reference/make_recons_fresh_fixture.sh OLD_BUILD/bin/saefw OLD_TREE/experiments/quickstart.lua
# Writes tests/fixtures/recons/fresh_metrics.txt: one line per eval and end event,
# "event step recons_score loss_clean loss_recons loss_zero_abl" as metrics.jsonl has them.
set -eu
bin="$1"; script="$2"
out="$(cd "$(dirname "$0")/.." && pwd)/fixtures/recons/fresh_metrics.txt"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" run "$script" --run_dir "$tmp/run" --num_tokens 16384 --batch_size 256 --buffer_mult 8 --eval_every 30 \
  --recons_batches 1 --report_tokens 0 > "$tmp/log" 2>&1 || { tail -5 "$tmp/log"; exit 1; }
python3 - "$tmp/run/metrics.jsonl" > "$out" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["event"] in ("eval", "end"):
        print(r["event"], r["step"], *(repr(r[k]) for k in ("recons_score", "loss_clean", "loss_recons", "loss_zero_abl")))
PY
echo "wrote $out"
cat "$out"
