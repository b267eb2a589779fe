#!/usr/bin/env bash
# The golden files (tests/golden) on other machines: builds libvae and
# golden_check for s390x (64-bit big-endian, run under qemu-user) and i386
# (32-bit, x87 floating point, run natively), each against its own Debian
# OpenBLAS and zlib, and checks every golden file bit for bit on both.
#
#   tests/cross/run.sh [s390x] [i386]      (default: both)
#
# Installs what is missing on Debian 12 (as root): the cross compilers and
# qemu-user; the targets' OpenBLAS, libgfortran and zlib packages are
# downloaded with apt-get and unpacked into build/cross-<target>/sysroot, not
# installed through multiarch (bookworm's security archive has no s390x, so
# s390x multiarch packages could not match the host's patched versions, and
# unpacking leaves the host's packages alone). Build trees:
# build/cross-<target>. A golden file is <name>.vae (a model) or <name>.ckpt
# (a checkpoint) beside <name>.expected; each is checked on every target.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
jobs=$(nproc 2>/dev/null || echo 2)
targets=("$@")
((${#targets[@]})) || targets=(s390x i386)
start=$SECONDS

# Debian architecture and compiler prefix of each target.
declare -A deb_arch=([s390x]=s390x [i386]=i386)
declare -A triplet=([s390x]=s390x-linux-gnu [i386]=i686-linux-gnu)
declare -A multiarch=([s390x]=s390x-linux-gnu [i386]=i386-linux-gnu)
declare -A cross_libc=([s390x]=libc6-dev-s390x-cross [i386]=libc6-dev-i386-cross)
# What the library links on the target, unpacked into its sysroot.
target_pkgs=(libopenblas0-pthread libopenblas-pthread-dev libgfortran5 zlib1g zlib1g-dev)

need=()
for t in "${targets[@]}"; do
  if [ -z "${deb_arch[$t]:-}" ]; then
    echo "tests/cross/run.sh: unknown target $t (s390x, i386)" >&2
    exit 2
  fi
  need+=("gcc-${triplet[$t]}" "${cross_libc[$t]}")
done
need+=(qemu-user pkg-config cmake)
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
for t in "${targets[@]}"; do
  dpkg --print-foreign-architectures | grep -qx "${deb_arch[$t]}" ||
    missing+=("(architecture ${deb_arch[$t]})")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/cross/run.sh: missing: ${missing[*]}; install them or run as root" >&2
    exit 1
  fi
  echo "tests/cross/run.sh: installing ${missing[*]}"
  for t in "${targets[@]}"; do
    dpkg --print-foreign-architectures | grep -qx "${deb_arch[$t]}" ||
      dpkg --add-architecture "${deb_arch[$t]}"
  done
  apt-get update -qq
  # No recommends: qemu-user would bring qemu-user-binfmt, which registers
  # handlers with the host kernel; the binaries here are run explicitly.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >/dev/null
fi
echo "cross: packages ready after $((SECONDS - start)) s"

# Unpacks the target's libraries into build/cross-<target>/sysroot, again only
# when the archive's versions differ from the ones unpacked there.
unpack() { # target
  local t=$1 arch=${deb_arch[$1]} dir=$root/build/cross-$1
  local sysroot=$dir/sysroot want=""
  for pkg in "${target_pkgs[@]}"; do
    want+="$pkg:$arch $(apt-cache policy "$pkg:$arch" | awk '/Candidate:/ {print $2}')"$'\n'
  done
  if [ -f "$sysroot/.versions" ] && [ "$(cat "$sysroot/.versions")" = "$want" ]; then
    return
  fi
  rm -rf "$sysroot" "$dir/debs"
  mkdir -p "$sysroot" "$dir/debs"
  (cd "$dir/debs" && apt-get download -qq -o APT::Sandbox::User=root \
    "${target_pkgs[@]/%/:$arch}")
  for deb in "$dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$sysroot"
  done
  # Absolute links (libz.so -> /lib/<multiarch>/...) point into the sysroot.
  find "$sysroot" -type l | while read -r link; do
    target=$(readlink "$link")
    case $target in /*) ln -sfn "$sysroot$target" "$link" ;; esac
  done
  printf '%s' "$want" >"$sysroot/.versions"
}

# Runs golden_check of one target, with that target's libraries.
run_target() { # target, golden_check arguments...
  local t=$1 sysroot=$root/build/cross-$1/sysroot
  shift
  local libs=$sysroot/usr/lib/${multiarch[$t]}/openblas-pthread:$sysroot/usr/lib/${multiarch[$t]}
  libs+=:$sysroot/lib/${multiarch[$t]}
  local exe=$root/build/cross-$t/golden_check
  case $t in
    s390x)
      qemu-s390x -L "/usr/${triplet[$t]}" -E "LD_LIBRARY_PATH=$libs" "$exe" "$@" ;;
    i386)
      # The x86-64 kernel runs i386 code itself; the loader comes from the
      # cross C library (no i386 multiarch install provides /lib/ld-linux.so.2).
      local loader=/usr/${triplet[$t]}/lib/ld-linux.so.2
      if "$loader" --version >/dev/null 2>&1; then
        "$loader" --library-path "$libs:/usr/${triplet[$t]}/lib" "$exe" "$@"
      else
        qemu-i386 -L "/usr/${triplet[$t]}" -E "LD_LIBRARY_PATH=$libs" "$exe" "$@"
      fi ;;
  esac
}

# What golden_check must report about the machine, so that a build that did
# not run where it was meant to cannot pass.
declare -A machine=([s390x]="host big-endian, 64-bit pointers"
                    [i386]="host little-endian, 32-bit pointers")

status=0
for t in "${targets[@]}"; do
  echo "== cross $t"
  phase=$SECONDS
  unpack "$t"
  cmake -S "$root/tests/cross" -B "$root/build/cross-$t" --toolchain "$root/tests/cross/$t.cmake" \
    -DVAE_CROSS_SYSROOT="$root/build/cross-$t/sysroot" -DVAE_WERROR=ON >/dev/null
  cmake --build "$root/build/cross-$t" -j"$jobs" >/dev/null
  echo "cross $t: built in $((SECONDS - phase)) s"
  phase=$SECONDS
  checked=0
  for expected in "$root"/tests/golden/*.expected; do
    base=${expected%.expected}
    if [ -f "$base.vae" ]; then
      args=("$base.vae" "$expected")
    elif [ -f "$base.ckpt" ]; then
      args=(--checkpoint "$base.ckpt" "$expected")
    else
      continue # the tampered files, below
    fi
    log=$root/build/cross-$t/$(basename "$base").log
    if OPENBLAS_NUM_THREADS=1 OPENBLAS_VERBOSE=2 run_target "$t" "${args[@]}" >"$log" 2>&1 &&
       grep -q "${machine[$t]}" "$log"; then
      # The machine once, then each file's result.
      ((checked)) || grep -h -m1 "^golden_check: host" "$log" | sed "s/^/cross $t: /"
      grep -h "^golden_check" "$log" | grep -v "^golden_check: host" |
        sed "s|$root/||g; s/^/cross $t: /"
    else
      echo "cross $t: $(basename "$base") FAILED:"
      sed "s|$root/||g; s/^/  /" "$log"
      grep -q "${machine[$t]}" "$log" || echo "  (expected '${machine[$t]}')"
      status=1
    fi
    checked=$((checked + 1))
  done
  # The check can fail here too: one value one ulp off is found, and only it
  # (a model's output, and a checkpoint's open epoch as restored).
  tampered() { # log name, expected pattern, golden_check arguments...
    local log=$root/build/cross-$t/$1.log pattern=$2
    shift 2
    if OPENBLAS_NUM_THREADS=1 run_target "$t" "$@" >"$log" 2>&1; then
      echo "cross $t: golden_check accepted ${*: -1}"
      status=1
    elif ! grep -q "$pattern" "$log" || ! grep -q ": 1 differing values" "$log"; then
      echo "cross $t: golden_check did not report the tampered value as expected:"
      sed "s|$root/||g; s/^/  /" "$log"
      status=1
    fi
  }
  tampered tampered "mu\[1\]\[2\]: got 3f3da000 .* 1 ulp apart" \
    "$root/tests/golden/v01_mlp.vae" "$root/tests/golden/v01_mlp.tampered.expected"
  tampered tampered-checkpoint "mean loss is 404025f2ad9ddfbe .*, expected 404025f2ad9ddfbf" \
    --checkpoint "$root/tests/golden/v11_sgd.ckpt" "$root/tests/golden/v11_sgd.tampered.expected"
  # OpenBLAS names the kernel set it picked (OPENBLAS_VERBOSE=2).
  core=$(grep -h -m1 "^Core:" "$root/build/cross-$t"/*.log 2>/dev/null | head -1 || true)
  echo "cross $t: $checked golden files checked in $((SECONDS - phase)) s${core:+ (OpenBLAS $core)}"
  ((checked)) || { echo "cross $t: no golden files found" >&2; status=1; }
done
echo "cross: done in $((SECONDS - start)) s"
exit $status
