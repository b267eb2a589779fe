#!/bin/sh
# expect_failure.sh SECONDS NEEDLE COMMAND...
#
# Runs COMMAND (an mpirun whose rank 1 dies on purpose) with a time limit
# and passes when the run ends by itself within SECONDS, with a nonzero exit
# status, and its output contains NEEDLE (what the dying rank prints, so
# that the failure is the one asked for). A run still going after SECONDS,
# the ranks left waiting for the dead one, is stopped (SIGTERM, which
# mpirun passes on to its ranks; SIGKILL 10 s later) and fails the test.
limit=$1
needle=$2
shift 2
out=$(mktemp "${TMPDIR:-/tmp}/expect_failure.XXXXXX") || exit 1
start=$(date +%s)
timeout --kill-after=10 "$limit" "$@" >"$out" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))
cat "$out"
found=0
grep -q -- "$needle" "$out" && found=1
rm -f "$out"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "expect_failure: the run did not end within $limit s: the other ranks hung"
  exit 1
fi
if [ "$rc" -eq 0 ]; then
  echo "expect_failure: the run ended with status 0 although a rank died"
  exit 1
fi
if [ "$found" -eq 0 ]; then
  echo "expect_failure: the output lacks \"$needle\": the run failed for another reason"
  exit 1
fi
echo "expect_failure: the run ended with status $rc after $elapsed s, as it should"
