#!/usr/bin/env bash
# The C sources follow .clang-format (issue 17, point 4). The frozen ABI headers under tests/abi/ are
# copies kept byte for byte and are not checked. Exit 77 (skipped) without clang-format.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
cf="$(command -v clang-format || command -v clang-format-14 || true)"
if [ -z "$cf" ]; then echo "format: clang-format is not installed; skipped"; exit 77; fi
cd "$root" || exit 1
mapfile -t files < <(find engine plugins tests bench examples hf_upload \( -name '*.c' -o -name '*.h' \) \
                     -not -path 'tests/abi/*' | sort)
if [ "${#files[@]}" -eq 0 ]; then echo "format: no sources found under $root"; exit 1; fi
out="$("$cf" --dry-run --Werror "${files[@]}" 2>&1)"
if [ -n "$out" ]; then
  echo "$out" | grep -E '(warning|error):' | head -20
  echo "format: $(echo "$out" | grep -cE '(warning|error):') places differ from .clang-format; run: clang-format -i FILE"
  exit 1
fi
echo "format: ${#files[@]} files follow .clang-format"
