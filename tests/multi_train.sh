#!/usr/bin/env bash
# Several SAEs on one buffer (tests/lua/multi_run.lua): SAE b of a run of a and b has the same bytes
# as b trained alone; a run killed (SIGKILL inside a step) and resumed with --resume ends with the
# same bytes as an uninterrupted one for every SAE; bad input gets its one-line error before training.
set -u
saefw=$1
tmp=$2
script=$(dirname "$0")/lua/multi_run.lua
rm -rf "$tmp"
mkdir -p "$tmp"
fail=0
run() { "$saefw" run "$script" "$@" >"$tmp/out.txt" 2>&1; }
same() {
  if cmp -s "$1" "$2"; then echo "ok: $3"; else echo "FAIL: $3 ($1 and $2 differ)"; fail=1; fi
}

run --run_dir "$tmp/ab" || { cat "$tmp/out.txt"; echo "FAIL: the run of a and b"; exit 1; }
run --run_dir "$tmp/b" --names b || { cat "$tmp/out.txt"; echo "FAIL: the run of b alone"; exit 1; }
same "$tmp/ab/b/final/sae_weights.safetensors" "$tmp/b/b/final/sae_weights.safetensors" "b beside a = b alone"

# Killed inside step 40 of SAE a (the step fault point counts both SAEs' steps), then resumed.
(SAEFW_FAULT=step:81 exec "$saefw" run "$script" --run_dir "$tmp/k" >"$tmp/kill.txt" 2>&1) 2>/dev/null
if [ -e "$tmp/k/a/final" ]; then echo "FAIL: the killed run finished"; fail=1; fi
run --run_dir "$tmp/k" --resume "$tmp/k" || { cat "$tmp/out.txt"; echo "FAIL: the resume"; exit 1; }
for s in a b; do
  same "$tmp/ab/$s/final/sae_weights.safetensors" "$tmp/k/$s/final/sae_weights.safetensors" "$s killed + resumed = uninterrupted"
done

# Killed inside SAE b's step 41, after SAE a wrote its checkpoint of step 42 and before b wrote its
# own: the resume continues both from step 35.
(SAEFW_FAULT=step:84 exec "$saefw" run "$script" --run_dir "$tmp/k2" >"$tmp/kill2.txt" 2>&1) 2>/dev/null
run --run_dir "$tmp/k2" --resume "$tmp/k2" || { cat "$tmp/out.txt"; echo "FAIL: the resume after a split checkpoint"; exit 1; }
for s in a b; do
  same "$tmp/ab/$s/final/sae_weights.safetensors" "$tmp/k2/$s/final/sae_weights.safetensors" "$s killed between the SAEs' checkpoints + resumed = uninterrupted"
done

# Stopped by SIGINT at whatever step it reaches in 2 s (every SAE and the buffer checkpoint there).
timeout -s INT 2 "$saefw" run "$script" --run_dir "$tmp/i" --steps 150 >"$tmp/int.txt" 2>&1
run --run_dir "$tmp/i" --steps 150 --resume "$tmp/i" || { cat "$tmp/out.txt"; echo "FAIL: the resume after SIGINT"; exit 1; }
run --run_dir "$tmp/full150" --steps 150 || { cat "$tmp/out.txt"; echo "FAIL: the 150-step run"; exit 1; }
for s in a b; do
  same "$tmp/full150/$s/final/sae_weights.safetensors" "$tmp/i/$s/final/sae_weights.safetensors" "$s stopped by SIGINT + resumed = uninterrupted"
done

check_error() {
  local what=$1 want=$2
  shift 2
  if run "$@"; then echo "FAIL: $what was accepted"; fail=1; return; fi
  if grep -q -- "$want" "$tmp/out.txt" && [ "$(grep -c . "$tmp/out.txt")" -eq 1 ]; then echo "ok: $what"
  else echo "FAIL: $what: expected one line with '$want', got:"; cat "$tmp/out.txt"; fail=1; fi
}
check_error "an empty saes list" "'saes' is empty" --run_dir "$tmp/e1" --bad empty
check_error "two SAEs named alike" "saes\[1\] and saes\[2\] are both named 'a'" --run_dir "$tmp/e2" --bad same_name
check_error "sae and saes" "give 'sae' or 'saes', not both" --run_dir "$tmp/e3" --bad both
check_error "an unknown field in an SAE's table" "saes\[1\]: unknown field 'lr' (valid: name, optimizer, plugins, sae)" \
  --run_dir "$tmp/e5" --bad field
check_error "a d_in that is not the buffer's width" "SAE c has d_in = 32, but the buffer's activations have width 256" \
  --run_dir "$tmp/e4" --names a,c
for d in e1 e2 e3 e4 e5; do
  if [ -e "$tmp/$d" ]; then echo "FAIL: $d: a run folder was made before the error"; fail=1; fi
done
exit $fail
