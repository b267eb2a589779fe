#!/usr/bin/env bash
# Quick start: installs what is missing (Debian, as root), builds libvae and
# its examples, fetches MNIST into data/ and trains the default VAE
# (784-400-20, 10 epochs). Each run writes its model, checkpoint and pictures
# into a new folder runs/<date-time>/ (mnist_vae prints it), never over an
# earlier run. Extra arguments go to mnist_vae, e.g.
# `bash examples/quickstart.sh --latent 2`. Ctrl-C stops training with a
# checkpoint and prints the command that resumes it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in pkg-config libopenblas-dev zlib1g-dev libpng-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "quickstart: missing packages: ${need[*]}; install them or run as root" >&2
    exit 1
  fi
  echo "quickstart: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cmake -S . -B build/quickstart -DCMAKE_BUILD_TYPE=Release -DVAE_BUILD_TESTS=OFF >/dev/null
cmake --build build/quickstart -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
bash examples/fetch_mnist.sh data
# Two workers (vae_context_set_threads) with one BLAS thread each: the
# fastest setting on two cores (docs/performance.md). mnist_vae sets the BLAS
# to one thread itself (vae_blas_set_threads); the variable also keeps
# OpenBLAS from starting threads of its own when it loads.
threads=$(nproc 2>/dev/null || echo 1)
[ "$threads" -gt 2 ] && threads=2
OPENBLAS_NUM_THREADS=1 build/quickstart/examples/mnist_vae --threads "$threads" --data data "$@"
case " $* " in
  *" --out "* | *" --out="* | *" --resume "* | *" --resume="*) ;;
  *) run=$(ls -td runs/*/ 2>/dev/null | head -n 1 || true)
     if [ -n "$run" ]; then
       echo "quickstart: the model, checkpoint and pictures are in ${run%/}/"
     fi ;;
esac
