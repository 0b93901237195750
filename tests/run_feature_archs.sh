#!/usr/bin/env bash
# `saefw analyze` and `saefw features` on a checkpoint of every architecture (issue 16 point 6): trains
# a small SAE of each on the bundled tiny-1l model (tests/lua/feature_archs.lua), checks analyze's
# output (the architecture, a mean L0) and the feature report's content (tests/lua/feature_archs_check.lua),
# and that features (and saefw.features) refuses a transcoder with one line naming it.
set -euo pipefail
saefw="$1"; tmp="$2"
cd "$(dirname "$0")"
rm -rf "$tmp"; mkdir -p "$tmp"
tokens=4096
fail() { echo "FAIL: $*" >&2; exit 1; }

for arch in topk batchtopk jumprelu gated relu relu_april transcoder; do
  dir="$tmp/$arch"
  "$saefw" run lua/feature_archs.lua --arch "$arch" --run_dir "$dir" >"$dir.train.txt" 2>&1 ||
    { cat "$dir.train.txt" >&2; fail "$arch: training"; }
  ckpt="$(sed -n 's/^checkpoint: //p' "$dir.train.txt")"
  train_l0="$(sed -n 's/^train L0: //p' "$dir.train.txt")"
  [ -f "$ckpt/cfg.json" ] || fail "$arch: no checkpoint"
  hook="$(sed -n 's/^\t"hook_name":\t"\(.*\)",$/\1/p' "$ckpt/cfg.json" | head -1)"
  d_sae="$(sed -n 's/^\t"d_sae":\t\([0-9]*\),$/\1/p' "$ckpt/cfg.json" | head -1)"
  [ -n "$hook" ] && [ -n "$d_sae" ] || fail "$arch: cfg.json lacks hook_name or d_sae"

  "$saefw" analyze "$ckpt" >"$dir.analyze.txt" 2>&1 || { cat "$dir.analyze.txt" >&2; fail "$arch: analyze"; }
  name="$arch"; case "$arch" in relu_april) name=relu ;; esac
  head -1 "$dir.analyze.txt" | grep -q "^SAE $ckpt: $name, d_in [0-9]*, d_sae $d_sae; activations from tiny-1l at $hook" ||
    fail "$arch: analyze's first line: $(head -1 "$dir.analyze.txt")"
  analyze_l0="$(sed -n 's/^mean L0 \([0-9.]*\) .*/\1/p' "$dir.analyze.txt")"
  [ -n "$analyze_l0" ] || fail "$arch: analyze states no mean L0"
  [ -f "$ckpt/freq_hist.svg" ] || fail "$arch: analyze wrote no freq_hist.svg"

  if [ "$arch" = transcoder ]; then
    if "$saefw" features "$ckpt" --out "$dir/report" --tokens $tokens >"$dir.features.txt" 2>&1; then
      fail "transcoder: features succeeded"
    fi
    [ "$(wc -l <"$dir.features.txt")" -eq 1 ] || fail "transcoder: features' error is not one line"
    grep -q "^saefw features: $ckpt: a transcoder (its decoder writes blocks.0.hook_mlp_out, not the site it reads)" \
      "$dir.features.txt" || fail "transcoder: features' error: $(cat "$dir.features.txt")"
    [ ! -e "$dir/report" ] || fail "transcoder: a report folder was written"
    grep -q "^transcoder: saefw.features refuses it" "$dir.train.txt" || fail "transcoder: saefw.features not refused"
    echo "transcoder: analyze ok (mean L0 $analyze_l0); features refused: $(cat "$dir.features.txt")"
    continue
  fi
  "$saefw" features "$ckpt" --out "$dir/report" --tokens $tokens >"$dir.features.txt" 2>&1 ||
    { cat "$dir.features.txt" >&2; fail "$arch: features"; }
  dead="$(sed -n 's/.*; \([0-9]*\) of [0-9]* features dead$/\1/p' "$dir.features.txt")"
  [ -n "$dead" ] || fail "$arch: features printed no dead count"
  k=0; case "$arch" in topk|batchtopk) k=8 ;; esac
  "$saefw" run lua/feature_archs_check.lua --report "$dir/report" --arch "$arch" --d_sae "$d_sae" --hook "$hook" \
    --tokens $tokens --dead "$dead" --analyze_l0 "$analyze_l0" --train_l0 "$train_l0" --k $k
done
echo "feature archs: all checks passed"
