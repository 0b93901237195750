#!/usr/bin/env bash
# examples/seed_recipe against experiments/quickstart.lua at the same tiny size: both exit 0, the C
# program prints its reconstruction score, holds no reference to a Lua symbol, and its final SAE
# weights are the same bytes as the script's.
#   run_example.sh SEED_RECIPE SAEFW QUICKSTART_LUA TMP_DIR
set -u
example="$1"; saefw="$2"; script="$3"; tmp="$4"
steps=60; batch=256; eval_every=30
rm -rf "$tmp"
mkdir -p "$tmp"
fail() { echo "FAIL: $*"; exit 1; }

if nm -u "$example" | grep -Eq ' (lua|luaL)_'; then
  fail "$example references Lua: $(nm -u "$example" | grep -E ' (lua|luaL)_' | head -3 | tr '\n' ' ')"
fi

out=$("$example" "$tmp/c" $steps $batch $eval_every 2>&1)
rc=$?
printf '%s\n' "$out" | grep -v '^step ' | tail -n 8
[ $rc -eq 0 ] || fail "seed_recipe exit status $rc"
printf '%s\n' "$out" | grep -Eq 'reconstruction score -?[0-9.]+ \(loss clean' || fail "no reconstruction score line"
[ -s "$tmp/c/final/sae_weights.safetensors" ] && [ -s "$tmp/c/final/cfg.json" ] || fail "no final checkpoint in $tmp/c"
printf '%s\n' "$out" | grep -q '^eval step 30: dead' || fail "no eval line at step 30"

out=$("$saefw" run "$script" --run_dir "$tmp/lua" --num_tokens $((steps * batch)) --batch_size $batch \
      --eval_every $eval_every --report_tokens 0 2>&1)
rc=$?
[ $rc -eq 0 ] || { printf '%s\n' "$out" | tail -n 10; fail "quickstart exit status $rc"; }
cmp "$tmp/c/final/sae_weights.safetensors" "$tmp/lua/final/sae_weights.safetensors" ||
  fail "the C program's final weights differ from the quickstart's"
echo "final weights identical to the quickstart's ($steps steps of $batch)"
echo "passed"
