#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing on Debian,
# then builds and runs the whole suite three times: Release with OpenBLAS
# and the static library (warnings are errors; also the API reference with
# doxygen warnings as errors), AddressSanitizer + UBSan, and Release with
# BLIS; then the threaded tests under ThreadSanitizer, the unit tests under
# valgrind memcheck, and each libFuzzer target for a bounded time
# (VAE_FUZZ_SECONDS, default 60), and last the golden model files and
# checkpoints on big-endian s390x (qemu-user) and 32-bit i386, cross-built
# (tests/cross/run.sh). The MNIST end-to-end smoke test and the
# installed-package tests run in the first build; MNIST is fetched into data/
# when it is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc 2>/dev/null || echo 2)

# libgfortran-12-dev: `pkg-config --static vae` ends in OpenBLAS's -lgfortran,
# which the installed-package test links. Open MPI: libvae_mpi and its tests
# (label "mpi").
need=()
for pkg in pkg-config g++ libopenblas-dev libblis-dev libcmocka-dev zlib1g-dev libpng-dev \
           libgfortran-12-dev abigail-tools doxygen python3 python3-cffi luajit valgrind \
           clang libclang-rt-14-dev libopenmpi-dev openmpi-bin; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing packages: ${need[*]}; install them or run as root" >&2
    exit 1
  fi
  echo "tests/run.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

bash examples/fetch_mnist.sh "$root/data"

run_suite() { # name, ctest args, cmake args...
  local name=$1 ctest_args=$2
  shift 2
  echo "== $name"
  cmake -S "$root" -B "$root/build/$name" -DVAE_WERROR=ON -DVAE_MNIST_DIR="$root/data" "$@" >/dev/null
  cmake --build "$root/build/$name" -j"$jobs" >/dev/null
  if [ "$name" = release ]; then # the API reference, doxygen warnings as errors
    cmake --build "$root/build/$name" --target docs
  fi
  (cd "$root/build/$name" && OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -j"$jobs" $ctest_args)
}

run_suite release "" -DVAE_BUILD_STATIC=ON
run_suite asan "-LE mnist" -DCMAKE_BUILD_TYPE=Debug -DVAE_SANITIZE=address,undefined -DVAE_BUILD_BENCH=OFF
run_suite blis "-LE mnist" -DVAE_BLAS=BLIS -DVAE_BUILD_BENCH=OFF -DVAE_BUILD_EXAMPLES=OFF

# ThreadSanitizer over the tests that run threads: shared models, several
# contexts and trainers at once, a context refused to a second caller.
echo "== tsan"
cmake -S "$root" -B "$root/build/tsan" -DVAE_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DVAE_SANITIZE=thread -DVAE_BUILD_BENCH=OFF -DVAE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$root/build/tsan" -j"$jobs" --target test_context >/dev/null
(cd "$root/build/tsan" && OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1 \
  ctest --output-on-failure -R '^test_context$')

# valgrind memcheck over the unit tests of the release build. OpenBLAS is held
# to its AVX2 kernels, which valgrind emulates (it has no AVX-512); the fork
# tests are skipped there (a child must leave its parent's worker pool
# alone, which memcheck would report as a leak in the child).
echo "== valgrind"
for t in "$root"/build/release/tests/test_*; do
  OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell VAE_TEST_NO_FORK=1 \
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    "$t" >"$root/build/valgrind-$(basename "$t").log" 2>&1 ||
    { echo "valgrind: $(basename "$t") failed:"; tail -40 "$root/build/valgrind-$(basename "$t").log"; exit 1; }
  echo "valgrind: $(basename "$t") clean"
done

# libFuzzer: each target for a bounded time from the committed corpus (read
# only; new inputs go to a scratch directory), under ASan + UBSan.
if command -v clang >/dev/null; then
  echo "== fuzz"
  CC=clang cmake -S "$root" -B "$root/build/fuzz" -DVAE_BUILD_FUZZERS=ON -DVAE_WERROR=ON \
    -DVAE_SANITIZE=address,undefined -DVAE_BUILD_EXAMPLES=OFF -DVAE_BUILD_BENCH=OFF >/dev/null
  cmake --build "$root/build/fuzz" -j"$jobs" --target fuzz_model_file fuzz_checkpoint fuzz_idx >/dev/null
  for target in model_file checkpoint idx; do
    scratch="$root/build/fuzz/corpus-$target"
    mkdir -p "$scratch"
    ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=512 \
      "$root/build/fuzz/tests/fuzz_$target" -max_total_time="${VAE_FUZZ_SECONDS:-60}" \
      -rss_limit_mb=4096 -print_final_stats=1 "$scratch" "$root/tests/fuzz/corpus/$target" \
      >"$root/build/fuzz/fuzz_$target.log" 2>&1 ||
      { echo "fuzz_$target failed:"; tail -60 "$root/build/fuzz/fuzz_$target.log"; exit 1; }
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$root/build/fuzz/fuzz_$target.log" |
      sed "s/^/fuzz_$target: /"
  done
else
  echo "== fuzz: clang not found, libFuzzer targets not run"
fi

# The golden files (tests/golden) on a big-endian machine (s390x, under
# qemu-user) and a 32-bit one (i386), cross-built against each target's own
# OpenBLAS: the same bits as here. Installs its cross compilers when missing.
echo "== cross"
bash tests/cross/run.sh
