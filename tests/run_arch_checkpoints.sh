#!/usr/bin/env bash
# Drives tests/lua/arch_checkpoints.lua for each architecture: a full run, a run killed after step 25
# and resumed, and a byte comparison of the two final weight files (resume is bit-exact).
set -euo pipefail
saefw="$1"; tmp="$2"
cd "$(dirname "$0")"
rm -rf "$tmp"; mkdir -p "$tmp"
for arch in topk batchtopk jumprelu gated; do
  "$saefw" run lua/arch_checkpoints.lua --arch "$arch" --phase full --run_dir "$tmp/$arch-full"
  "$saefw" run lua/arch_checkpoints.lua --arch "$arch" --phase kill --run_dir "$tmp/$arch-cut" >/dev/null 2>&1
  "$saefw" run lua/arch_checkpoints.lua --arch "$arch" --phase resume --run_dir "$tmp/$arch-cut"
  cmp "$tmp/$arch-full/final/sae_weights.safetensors" "$tmp/$arch-cut/final/sae_weights.safetensors"
  echo "$arch: resumed run's final weights are the uninterrupted run's, byte for byte"
done
echo "arch checkpoints: all checks passed"
