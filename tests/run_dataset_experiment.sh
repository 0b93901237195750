#!/usr/bin/env bash
# The quickstart with --data hf://datasets/saefw/tiny-tokens: a private Hub cache holding the bundled
# corpus as Parquet shards, a private token cache; the first run converts, the second finds the cache.
#   run_dataset_experiment.sh SAEFW TMP SOURCE_DIR
set -u
bin="$1"; tmp="$2"; src="$3"
rm -rf "$tmp"
commit=0123456789abcdef0123456789abcdef01234567
repo="$tmp/hub/datasets--saefw--tiny-tokens"
mkdir -p "$repo/snapshots/$commit/data" "$repo/refs" || exit 1
cp "$src"/tests/fixtures/dataset/data/*.parquet "$repo/snapshots/$commit/data/" || exit 1
printf %s "$commit" > "$repo/refs/main"
export HF_HUB_CACHE="$tmp/hub" SAEFW_CACHE="$tmp/cache" HF_HUB_OFFLINE=1
run() {
  "$bin" run "$src/experiments/quickstart.lua" --run_dir "$tmp/run$1" --data hf://datasets/saefw/tiny-tokens \
    --num_tokens 1e4 --batch_size 256 --buffer_mult 8 --eval_every 1000 --recons_batches 1 --report_tokens 0 2>&1
}
out=$(run 1); rc=$?
printf '%s\n' "$out" | grep -v '^step ' | tail -n 12
[ $rc -eq 0 ] || { echo "FAIL: exit status $rc"; exit 1; }
printf '%s\n' "$out" | grep -q "token cache: converting 2 Parquet shard" || { echo "FAIL: no conversion line"; exit 1; }
printf '%s\n' "$out" | grep -q "1280 token rows of 128" || { echo "FAIL: not the dataset's 1280 rows"; exit 1; }
out2=$(run 2); rc=$?
[ $rc -eq 0 ] || { printf '%s\n' "$out2" | tail -5; echo "FAIL: second run, exit status $rc"; exit 1; }
printf '%s\n' "$out2" | grep -q "token cache: converting" && { echo "FAIL: the second run converted again"; exit 1; }
cmp -s "$tmp/run1/final/sae_weights.safetensors" "$tmp/run2/final/sae_weights.safetensors" ||
  { echo "FAIL: the run from the cache differs from the run that made it"; exit 1; }
out3=$("$bin" run "$src/experiments/quickstart.lua" --run_dir "$tmp/run3" --data hf://datasets/saefw/absent 2>&1); rc=$?
printf '%s\n' "$out3" | tail -2
[ $rc -ne 0 ] && printf '%s\n' "$out3" | grep -q "saefw download --dataset saefw/absent" ||
  { echo "FAIL: an absent dataset does not name the download command"; exit 1; }
echo "passed"
