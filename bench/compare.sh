#!/bin/sh
# Run bench_sae and the seed's step in PyTorch (bench/torch_step.py) at the same shapes and L0 levels,
# then print saefw's speed-up in tokens/s for each. Logs are kept in the current folder.
#   bench/compare.sh [build-folder] [--small]     (build folder: build)
set -e
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
shift 2>/dev/null || true
"$build/bin/bench_sae" "$@" | tee bench_sae.log
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 "$here/torch_step.py" "$@" | tee torch_step.log
else
    echo "python3-torch is not installed: no PyTorch comparison"
    exit 0
fi
echo
echo "== saefw vs PyTorch, tokens/s"
awk '
    function field(k,   i) { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) return substr($i, length(k) + 2); return "" }
    /^RESULT/ && field("tokens_per_s") != "" {
        key = field("shape") " " field("l0_target")
        if (FILENAME == "bench_sae.log") { ours[key] = field("tokens_per_s"); path[key] = field("path"); order[++n] = key }
        else theirs[key] = field("tokens_per_s")
    }
    END {
        printf "%-6s %8s %7s %12s %12s %9s\n", "shape", "L0 want", "path", "saefw tok/s", "torch tok/s", "speed-up"
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, p, " ")
            if (k in theirs) printf "%-6s %8s %7s %12.0f %12.0f %8.2fx\n", p[1], p[2], path[k], ours[k], theirs[k], ours[k] / theirs[k]
        }
    }' bench_sae.log torch_step.log
