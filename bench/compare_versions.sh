#!/usr/bin/env bash
# Side by side: the training step and the MNIST epoch of this tree against
# an older revision's, in alternating runs of one invocation, so that the
# noise of a shared machine hits both alike.
#
#   bash bench/compare_versions.sh REV [ROUNDS]     e.g. REV = 07d09c8 (0.1)
#
# Builds REV (a git worktree under build/) and this tree in Release. Steps
# are timed by vae_step_time (bench/step_time.c), one model and one worker
# count alone in a process, and for REV by the same program written against
# the 0.1 API (bench/step_time_0.1.c, so REV must have the 0.1 API). Per
# round and version: the MLP's and the conv VAE's step with 1 and 2 workers,
# and one 60000-image MNIST epoch with two workers (data/ must hold MNIST:
# examples/fetch_mnist.sh). Prints median ms per step and seconds per epoch.
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
  cmake --build "$bld" -j2 --target vae mnist_vae >/dev/null
done
cmake --build "$new" -j2 --target vae_step_time >/dev/null
# REV's step timer: the same program written against the 0.1 API.
cc -O2 -std=c11 -I"$old_src/include" "$root/bench/step_time_0.1.c" -L"$old" -lvae \
  -Wl,-rpath,"$old" -o "$old/vae_step_time_old"

old_step() { # model workers [BLAS threads] -> median ms of one training step
  OPENBLAS_NUM_THREADS=${3:-1} "$old/vae_step_time_old" "$1" "$2" "$4" | awk '{print $(NF-4)}'
}
new_step() { # model workers [BLAS threads] -> median ms of one training step
  OPENBLAS_NUM_THREADS=${3:-1} "$new/bench/vae_step_time" --model "$1" --workers "$2" \
    --reps "$4" | awk '{print $(NF-4)}'
}
epoch() { # build dir -> seconds of one epoch with two workers
  # A fresh output folder each time: since 1.1 mnist_vae never writes over a
  # model it did not create (and 0.1 has no --force).
  rm -rf "$root/build/compare-out"
  "$1/examples/mnist_vae" --epochs 1 --threads 2 --data "$root/data" \
    --out "$root/build/compare-out" | awk '/s\/epoch/ {for (i = 1; i <= NF; i++) if ($i == "s/epoch") print $(i - 1)}'
}

# Columns: the MLP's step with 1 and 2 workers (BLAS 1 thread) of both
# versions; one worker over a two-thread BLAS (the default of a one-worker
# context); REV with two workers over a two-thread BLAS, the
# oversubscription that 1.0 refuses; the conv VAE's step with 1 and 2
# workers; one MNIST epoch with two workers.
printf '%-5s %8s %8s %8s %8s %9s %9s %8s %8s %8s %8s %7s %7s\n' round "old 1w" "new 1w" \
  "old 2w" "new 2w" "new 1w/B2" "old 2w/B2" "cv old1" "cv new1" "cv old2" "cv new2" "old ep" \
  "new ep"
for r in $(seq 1 "$rounds"); do
  o1=$(old_step mlp 1 1 200) n1=$(new_step mlp 1 1 200)
  o2=$(old_step mlp 2 1 200) n2=$(new_step mlp 2 1 200)
  nb=$(new_step mlp 1 2 200) ob=$(old_step mlp 2 2 200)
  c1=$(old_step conv 1 1 10) d1=$(new_step conv 1 1 10)
  c2=$(old_step conv 2 1 10) d2=$(new_step conv 2 1 10)
  oe=$(epoch "$old") ne=$(epoch "$new")
  printf '%-5s %8s %8s %8s %8s %9s %9s %8s %8s %8s %8s %7s %7s\n' "$r" "$o1" "$n1" "$o2" "$n2" \
    "$nb" "$ob" "$c1" "$d1" "$c2" "$d2" "$oe" "$ne"
done
