#!/bin/sh
# Fails each allocation of the process in turn and checks that the program
# survives it (ctest: fault_survive_blis; docs/reliability.md, "Allocation
# failure inside the BLAS").
#
#   survive.sh DRIVER PRELOAD
#
# DRIVER is tests/fault/survive.c built, PRELOAD the interposer
# tests/fault/fail_malloc.c built as a shared library. Runs without failure
# give the number of allocating calls C and the checksum of the results;
# then DRIVER runs with FAIL_MALLOC_AT=N for N = 1, 2, ... until a run
# completes without reaching its N-th call and N is above every count of
# calls seen (the count varies a little with thread timing). Every N up to
# SURVIVE_DENSE (default 2000) is run, then every SURVIVE_STRIDE-th (default
# 10), so that a larger scenario stays fast; the summary says which were.
#
# Each run must exit 0 with the same checksum. A run that dies (a signal,
# or an exit from inside a library, without the driver's last line) is
# allowed only when the refused call was made by an object whose path
# matches the extended regex SURVIVE_ALLOWED_DEATHS (default
# 'libblis|libgomp': BLIS aborts, and the OpenMP runtime under it exits,
# when their own allocations fail; libvae cannot report those). Such deaths
# are listed, grouped by caller and reason, and do not fail the test; any
# other failure does, with N and the reason. Set SURVIVE_ALLOWED_DEATHS=
# (empty) to make every death a failure.
set -u
driver=$1
preload=$2
dense=${SURVIVE_DENSE:-2000}
stride=${SURVIVE_STRIDE:-10}
allowed=${SURVIVE_ALLOWED_DEATHS-libblis|libgomp}
to=""
if command -v timeout >/dev/null 2>&1; then
  to="timeout 60"
fi
tmp=${TMPDIR:-/tmp}/vae_survive_out.$$
trap 'rm -f "$tmp"' EXIT

start=$(date +%s)
# The count may vary a little from run to run (which thread makes a BLAS
# call first changes the BLAS's and its OpenMP runtime's allocations): the
# largest of three runs, and of every completed run below, is the bound.
calls=0
for i in 1 2 3; do
  LD_PRELOAD=$preload $to "$driver" >"$tmp" 2>&1
  rc=$?
  ref=$(sed -n 's/^survive: calls=\([0-9]*\) hit=0 .*checksum=\([0-9a-f]*\)$/\1 \2/p' "$tmp")
  if [ $rc -ne 0 ] || [ -z "$ref" ]; then
    echo "survive: the run without failure did not pass (exit $rc):"
    cat "$tmp"
    exit 1
  fi
  [ "${ref% *}" -gt "$calls" ] && calls=${ref% *}
  if [ $i -gt 1 ] && [ "${ref#* }" != "$sum" ]; then
    echo "survive: two runs without failure gave different results: $sum, ${ref#* }"
    exit 1
  fi
  sum=${ref#* }
done
echo "survive: up to $calls allocating calls in the scenario, checksum $sum"

step() {
  if [ $n -lt "$dense" ]; then
    n=$((n + 1))
  else
    n=$((n + stride))
  fi
}
n=1 prev=0 unreached=0 runs=0 survived=0 reported=0 deaths=0 failures=0 last=0
group="" gfirst=0 glast=0
flush() {
  if [ -n "$group" ]; then
    if [ "$gfirst" -eq "$glast" ]; then
      echo "  N=$gfirst: $group"
    else
      echo "  N=$gfirst..$glast: $group"
    fi
  fi
  group=""
}
while :; do
  FAIL_MALLOC_AT=$n LD_PRELOAD=$preload $to "$driver" >"$tmp" 2>&1
  rc=$?
  runs=$((runs + 1))
  marker=$(grep '^survive: calls=' "$tmp")
  refused=$(sed -n 's/^fail_malloc: refused call [0-9]* (\(.*\)) from \(.*\)$/\1 from \2/p' "$tmp")
  caller=$(sed -n 's/^fail_malloc: refused call [0-9]* (.*) from \(.*\)$/\1/p' "$tmp")
  if [ $rc -eq 0 ] && [ -n "$marker" ]; then
    c=${marker#survive: calls=}
    c=${c%% *}
    [ "$c" -gt "$calls" ] && calls=$c
    case $marker in
      *" hit=0 "*)
        # Done when no run can reach N any more.
        if [ $n -gt "$calls" ]; then
          break
        fi
        unreached=$((unreached + 1))
        prev=$n
        step
        continue ;;
    esac
    last=$n
    if [ "${marker##*checksum=}" != "$sum" ]; then
      failures=$((failures + 1))
      echo "survive: FAIL at N=$n ($refused): the results differ from the run without failure"
      cat "$tmp"
    else
      survived=$((survived + 1))
      case $marker in
        *" failed=- "*) ;;
        *) reported=$((reported + 1)) ;;
      esac
    fi
  else
    last=$n
    if [ $rc -gt 128 ]; then
      sig=$((rc - 128))
      why="killed by signal $sig (SIG$(kill -l $sig 2>/dev/null))"
    elif [ $rc -eq 124 ] && [ -n "$to" ]; then
      why="hung (timeout after 60 s)"
    elif [ -n "$marker" ]; then
      why="$(grep '^survive: FAILED' "$tmp")"
    else
      why="exited with status $rc from inside a library"
    fi
    said=$(grep -v '^fail_malloc: \|^survive: \|^$' "$tmp" | head -n 2 | tr '\n' ' ')
    if [ -z "$marker" ] && [ -n "$allowed" ] && [ -n "$caller" ] &&
       printf '%s\n' "$caller" | grep -Eq "$allowed"; then
      deaths=$((deaths + 1))
      key="${refused%% of *} from ${caller##*/}: $why; it said: $said"
      if [ "$key" = "$group" ] && [ "$glast" -eq "$prev" ]; then
        glast=$n
      else
        [ -z "$group" ] || [ "$deaths" -eq 1 ] || flush
        [ "$deaths" -eq 1 ] && echo "survive: deaths inside the BLAS (allowed, see docs/reliability.md):"
        group=$key gfirst=$n glast=$n
      fi
    else
      failures=$((failures + 1))
      echo "survive: FAIL at N=$n (${refused:-no call refused}): $why"
      sed 's/^/  | /' "$tmp"
    fi
  fi
  prev=$n
  step
done
flush
secs=$(( $(date +%s) - start ))
if [ "$n" -le "$dense" ]; then
  swept="every N from 1 to $n"
else
  swept="every N from 1 to $dense, then every ${stride}th to $n"
fi
echo "survive: $swept: $runs runs in ${secs} s (the last reached no failure);" \
     "$survived survived ($reported reported by a libvae call, the rest absorbed)," \
     "$deaths died inside the BLAS, $failures failed; $unreached runs made fewer than N calls" \
     "(last failure at N=$last)"
[ $failures -eq 0 ]
