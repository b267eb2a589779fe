#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing on Debian,
# then builds and runs the whole suite three times: Release with OpenBLAS
# and the static library (warnings are errors; also the API reference with
# doxygen warnings as errors), AddressSanitizer + UBSan, and Release with
# BLIS; then the threaded tests under ThreadSanitizer. The MNIST end-to-end smoke test and the installed-package tests run
# in the first build; MNIST is fetched into data/ when it is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc 2>/dev/null || echo 2)

# libgfortran-12-dev: `pkg-config --static vae` ends in OpenBLAS's -lgfortran,
# which the installed-package test links.
need=()
for pkg in pkg-config g++ libopenblas-dev libblis-dev libcmocka-dev zlib1g-dev libpng-dev \
           libgfortran-12-dev abigail-tools doxygen python3 python3-cffi luajit; do
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
