#!/usr/bin/env bash
# A checkpoint write that fails for lack of space (a 400 KiB tmpfs) stops the run with a message
# naming the file and the cause, and leaves the previous checkpoints intact; a run folder on a
# read-only file system is refused at the start. Needs mount rights (root); exits 77 (skipped) otherwise.
set -u
bin="$1"; tests="$2"; tmp="$3"
rm -rf "$tmp" && mkdir -p "$tmp/full" "$tmp/ro"
if ! unshare -m true 2>/dev/null || ! unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs '$tmp/full'" 2>/dev/null; then
  echo "skipped: cannot mount a tmpfs here (needs root and unshare)"
  exit 77
fi
cd "$tests"
out=$(unshare -m sh -c "
  mount -t tmpfs -o size=400k tmpfs '$tmp/full' || exit 90
  '$bin' run lua/train_small.lua --run_dir '$tmp/full/run' --checkpoint_every 4 --steps 400 > '$tmp/full.log' 2>&1
  echo \"rc=\$?\"
  ls '$tmp/full/run'
  '$bin' run lua/check_resumable.lua --run_dir '$tmp/full/run' 2>&1
  df -k '$tmp/full' | tail -n 1
" 2>&1)
echo "$out"
echo "--- run log (tail)"; tail -n 3 "$tmp/full.log"
fail=0
echo "$out" | grep -q '^rc=0$' && { echo "FAIL: the run on a full disk exited 0"; fail=1; }
grep -q "No space left on device" "$tmp/full.log" || { echo "FAIL: no 'No space left on device' message"; fail=1; }
echo "$out" | grep -q "intact checkpoint" || { echo "FAIL: no intact checkpoint after the failed write"; fail=1; }
echo "$out" | grep -q "\.tmp\." && { echo "FAIL: a temporary checkpoint folder was left behind"; fail=1; }

out=$(unshare -m sh -c "
  mount -t tmpfs -o size=64k,ro tmpfs '$tmp/ro' || exit 90
  '$bin' run lua/train_small.lua --run_dir '$tmp/ro/run' --steps 20 2>&1
  echo \"rc=\$?\"
" 2>&1)
echo "$out" | tail -n 2
echo "$out" | grep -q '^rc=0$' && { echo "FAIL: a run on a read-only file system exited 0"; fail=1; }
echo "$out" | grep -q "Read-only file system" || { echo "FAIL: no 'Read-only file system' message"; fail=1; }
[ $fail -eq 0 ] && echo "disk full and read-only: passed"
exit $fail
