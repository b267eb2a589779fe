#!/usr/bin/env bash
# Side by side: the training step and the MNIST epoch of this tree against
# an older revision's, in alternating runs of one invocation, so that the
# noise of a shared machine hits both alike.
#
#   bash bench/compare_versions.sh REV [ROUNDS]     e.g. REV = 07d09c8 (0.1)
#
# Builds REV (a git worktree under build/) and this tree in Release, then per
# round: REV's vae_bench with 1 and 2 workers, this tree's vae_bench (it times
# 1 and 2 workers in one run), both over a two-thread BLAS too, and one
# 60000-image MNIST epoch of each
# version's mnist_vae with two workers (data/ must hold MNIST:
# examples/fetch_mnist.sh). Prints the median step in ms of each run and the
# epoch's seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rev=${1:?usage: bench/compare_versions.sh REV [ROUNDS]}
rounds=${2:-3}
old_src=$root/build/compare-src
old=$root/build/compare-old
new=$root/build/compare-new

if [ ! -d "$old_src" ]; then
  git worktree add --detach "$old_src" "$rev" >/dev/null
else
  git -C "$old_src" checkout --detach -q "$rev"
fi
for d in "$old_src:$old" "$root:$new"; do
  src=${d%%:*} bld=${d##*:}
  cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DVAE_BUILD_TESTS=OFF >/dev/null
  cmake --build "$bld" -j2 --target vae_bench mnist_vae >/dev/null
done

old_step() { # workers [BLAS threads] -> median ms of the training step
  OPENBLAS_NUM_THREADS=${2:-1} "$old/bench/vae_bench" --reps 200 --model-threads "$1" |
    awk '/^training step/ {print $3; exit}'
}
epoch() { # build dir -> seconds of one epoch with two workers
  "$1/examples/mnist_vae" --epochs 1 --threads 2 --data "$root/data" \
    --out "$root/build/compare-out" | awk '/s\/epoch/ {for (i = 1; i <= NF; i++) if ($i == "s/epoch") print $(i - 1)}'
}

# Columns: steps with 1 and 2 workers (BLAS 1 thread) of both versions; one
# worker over a two-thread BLAS (the default of a one-worker context); REV
# with two workers over a two-thread BLAS, the oversubscription that 1.0
# refuses; then the epochs.
printf '%-5s %9s %9s %9s %9s %11s %11s %9s %9s\n' round "old 1w" "new 1w" "old 2w" "new 2w" \
  "new 1w/B2" "old 2w/B2" "old ep" "new ep"
for r in $(seq 1 "$rounds"); do
  o1=$(old_step 1)
  newout=$("$new/bench/vae_bench" --reps 200 --infer-reps 1 --model-threads 2)
  n1=$(printf '%s\n' "$newout" | awk '/^summary: step/ {print $3}')
  n2=$(printf '%s\n' "$newout" | awk '/^with 2 workers: step/ {print $5}')
  o2=$(old_step 2)
  nb=$(OPENBLAS_NUM_THREADS=2 "$new/bench/vae_bench" --reps 200 --infer-reps 1 --model-threads 1 |
    awk '/^summary: step/ {print $3}')
  ob=$(old_step 2 2)
  oe=$(epoch "$old")
  ne=$(epoch "$new")
  printf '%-5s %9s %9s %9s %9s %11s %11s %9s %9s\n' "$r" "$o1" "$n1" "$o2" "$n2" "$nb" "$ob" "$oe" "$ne"
done
