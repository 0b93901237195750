#!/bin/sh
# Build the libFuzzer targets of tests/fuzz/ with clang (AddressSanitizer + UBSan) in a separate
# build folder and run each one for SECONDS (default 60) on a copy of its seed corpus and kept
# crash inputs. Prints per target the executions and the crashes, OOMs and timeouts found; their
# inputs are copied to tests/fuzz/pending/<target>/ for the developer to fix and then move to
# tests/fuzz/crashes/<target>/ (replayed by ctest).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]      (targets: the fuzz_<target>.c names)
# Environment: SAEFW_FUZZ_BUILD (build folder, default build-fuzz), SAEFW_FUZZ_SUMMARY (also write
# the result table to this file).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
case $secs in
'' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;;
esac
build=${SAEFW_FUZZ_BUILD:-$root/build-fuzz}

# clang and its libFuzzer runtime (Debian 12: clang-14 and libclang-rt-14-dev).
have_libfuzzer() {
    command -v clang >/dev/null 2>&1 || return 1
    probe=$(mktemp -d)
    printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
    clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >/dev/null 2>&1
    rc=$?
    rm -rf "$probe"
    return $rc
}
if ! have_libfuzzer; then
    echo "fuzz.sh: installing clang and libclang-rt-14-dev"
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo=sudo; else
        echo "fuzz.sh: clang with libFuzzer is missing; run as root or install clang libclang-rt-14-dev" >&2
        exit 1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
    have_libfuzzer || { echo "fuzz.sh: clang still cannot link -fsanitize=fuzzer" >&2; exit 1; }
fi

targets=$*
if [ -z "$targets" ]; then
    for f in "$root"/tests/fuzz/fuzz_*.c; do
        t=$(basename "$f" .c)
        t=${t#fuzz_}
        [ "$t" = common ] || targets="$targets $t"
    done
fi
build_targets=""
for t in $targets; do
    [ -f "$root/tests/fuzz/fuzz_$t.c" ] || { echo "fuzz.sh: no target '$t' (tests/fuzz/fuzz_$t.c)" >&2; exit 2; }
    build_targets="$build_targets fuzz_$t"
done

echo "fuzz.sh: building$build_targets in $build"
mkdir -p "$build"
CC=clang cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DSAEFW_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    >"$build/fuzz-configure.log" 2>&1 || { cat "$build/fuzz-configure.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $build_targets >"$build/fuzz-build.log" 2>&1 ||
    { tail -50 "$build/fuzz-build.log" >&2; exit 1; }

# Allocations no allocator can satisfy return NULL, as they do without ASan; the code under test
# must handle that. Merely large ones still count: libFuzzer's -malloc_limit_mb reports them.
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
# UBSan stops at the first report, except those of bugs already filed (ubsan_pending.supp).
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/tests/fuzz/ubsan_pending.supp${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export OPENBLAS_NUM_THREADS=1

table="target seconds executions crashes ooms timeouts"
status=0
for t in $targets; do
    work="$build/fuzz-run/$t"
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
    for src in corpus crashes; do
        if [ -d "$root/tests/fuzz/$src/$t" ]; then cp "$root/tests/fuzz/$src/$t"/* "$work/corpus/" 2>/dev/null || true; fi
    done
    dict=""
    [ -f "$root/tests/fuzz/dict/$t.dict" ] && dict="-dict=$root/tests/fuzz/dict/$t.dict"
    echo "fuzz.sh: $t for ${secs}s"
    # Fork mode keeps going after a crash, so one bug does not end the run; every input gets at
    # most 10 s and 2 GiB.
    # shellcheck disable=SC2086
    TMPDIR="$work/tmp" "$build/fuzz/fuzz_$t" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work/artifacts/" \
        $dict "$work/corpus" >"$work/log" 2>&1 || true
    # Fork mode's progress lines: "#EXECS: cov: .. oom/timeout/crash: O/T/C time: ..".
    last=$(grep -E '^#[0-9]+: ' "$work/log" | tail -1)
    execs=$(printf '%s\n' "$last" | sed -n 's/^#\([0-9]*\):.*/\1/p')
    otc=$(printf '%s\n' "$last" | sed -n 's/.*oom\/timeout\/crash: \([0-9]*\/[0-9]*\/[0-9]*\).*/\1/p')
    if [ -z "$execs" ]; then
        echo "fuzz.sh: $t did not run; see $work/log" >&2
        tail -20 "$work/log" >&2
        status=1
        continue
    fi
    ooms=${otc%%/*}
    crashes=${otc##*/}
    timeouts=${otc#*/}
    timeouts=${timeouts%/*}
    # A job that dies before its first progress line is missing from the counts: the artifacts
    # it left are counted instead when they are more.
    n_crash=0 n_oom=0 n_timeout=0 new=0
    for a in "$work/artifacts"/crash-* "$work/artifacts"/leak-* "$work/artifacts"/oom-* "$work/artifacts"/timeout-*; do
        [ -f "$a" ] || continue
        case $(basename "$a") in
        oom-*) n_oom=$((n_oom + 1)) ;;
        timeout-*) n_timeout=$((n_timeout + 1)) ;;
        *) n_crash=$((n_crash + 1)) ;;
        esac
        mkdir -p "$root/tests/fuzz/pending/$t"
        name=$(basename "$a")
        if [ ! -f "$root/tests/fuzz/pending/$t/$name" ]; then
            cp "$a" "$root/tests/fuzz/pending/$t/$name"
            new=$((new + 1))
        fi
    done
    [ "$n_crash" -gt "$crashes" ] && crashes=$n_crash
    [ "$n_oom" -gt "$ooms" ] && ooms=$n_oom
    [ "$n_timeout" -gt "$timeouts" ] && timeouts=$n_timeout
    line="$t $secs $execs $crashes $ooms $timeouts"
    table="$table
$line"
    echo "fuzz.sh: $t: $execs executions in ${secs}s, $crashes crashes, $ooms OOMs, $timeouts timeouts" \
        "($new new inputs in tests/fuzz/pending/$t/; log: $work/log)"
done

echo
printf '%s\n' "$table" | awk '{ printf "%-16s %8s %12s %8s %6s %9s\n", $1, $2, $3, $4, $5, $6 }'
[ -n "${SAEFW_FUZZ_SUMMARY:-}" ] && printf '%s\n' "$table" >"$SAEFW_FUZZ_SUMMARY"
exit $status
