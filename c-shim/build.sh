#!/usr/bin/env bash
# Builds the C shim into c-shim/build/libbunring.so (or DIR/libbunring.so with --out DIR). (The
# sanitizer drivers are built by tests/c/build.sh.) liburing is linked statically (liburing.a from
# liburing-dev) so the library runs where liburing is not installed. Installs liburing-dev through apt
# when its headers are missing and we are root; otherwise says which packages to install.
# Rebuilds the library only when the C sources (and this script) differ from the ones it was built
# from: libbunring.so.source-hash beside it records their hash (sha256sum of each file, in C-locale
# name order, then sha256sum of that listing; ffi/locate.ts computes the same). --force always rebuilds.
# The library is linked under a temporary name and renamed into place, so concurrent builds into the
# same directory (two first uses at once) never expose a half-written file.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/build"
quiet=0
force=0
while [ $# -gt 0 ]; do
  arg=$1
  shift
  case "$arg" in
    --quiet) quiet=1 ;;
    --force) force=1 ;;
    --out)
      [ $# -gt 0 ] && [ -n "$1" ] || { echo "build.sh: --out needs a directory" >&2; exit 2; }
      out=$1
      shift
      ;;
    --out=?*) out=${arg#--out=} ;;
    *) echo "build.sh: unknown argument '$arg' (allowed: --quiet, --force, --out DIR)" >&2; exit 2 ;;
  esac
done
say() { [ "$quiet" = 1 ] || echo "$@"; }

have_compiler() {
  command -v cc >/dev/null 2>&1 && echo '#include <stdlib.h>' | cc -E -x c - >/dev/null 2>&1
}
have_liburing_headers() {
  echo '#include <liburing.h>' | cc -E -x c - >/dev/null 2>&1
}

# A C compiler with the C library's headers (build-essential) is required and never installed from
# here; a missing liburing-dev is installed with apt-get when root, else named in the one error.
ensure_toolchain() {
  if ! have_compiler; then
    local pkgs="build-essential"
    [ -f /usr/include/liburing.h ] || pkgs="build-essential liburing-dev"
    echo "bunring: cannot build the native shim: no working C compiler 'cc'. Install ${pkgs// / and } (Debian/Ubuntu: sudo apt-get install $pkgs)." >&2
    exit 1
  fi
  ensure_liburing
}

ensure_liburing() {
  if have_liburing_headers; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bunring: installing liburing-dev (io_uring headers and library) with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq liburing-dev >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null && apt-get install -y -qq liburing-dev >/dev/null
    }
    return 0
  fi
  echo "bunring: cannot build the native shim: the liburing headers are missing. Install the package 'liburing-dev' (Debian/Ubuntu: sudo apt-get install liburing-dev; Fedora: liburing-devel) and run this again." >&2
  exit 1
}

# Hash of the C sources, headers and this script: sha256sum of each in C-locale name order, then
# sha256sum of that listing ("<hex>  <name>" lines). ffi/locate.ts computes the same value.
source_hash() {
  (
    export LC_ALL=C
    cd "$here"
    # shellcheck disable=SC2046 # names are plain words (no spaces)
    sha256sum -- $(ls -- *.c *.h build.sh) | sha256sum | cut -c1-64
  )
}

mkdir -p "$out"
cflags=(-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread)
srcs=("$here"/*.c)
lib="$out/libbunring.so"
hash=$(source_hash)

if [ "$force" = 1 ] || [ ! -f "$lib" ] || [ "$(cat "$lib.source-hash" 2>/dev/null || true)" != "$hash" ]; then
  ensure_toolchain
  # liburing statically, its symbols kept out of the library's dynamic exports; -luring only when
  # the toolchain has no liburing.a (then the library needs liburing installed where it runs).
  uring_a=$(cc -print-file-name=liburing.a)
  if [ "$uring_a" != liburing.a ] && [ -f "$uring_a" ]; then
    uring=("$uring_a" -Wl,--exclude-libs,ALL)
  else
    uring=(-luring)
  fi
  say "bunring: building $lib"
  # Unique temporary names in the output directory (same filesystem: rename is atomic).
  tmp="$out/.libbunring.so.${HOSTNAME:-host}.$$.tmp"
  trap 'rm -f "$tmp" "$tmp.hash"' EXIT
  cc "${cflags[@]}" -shared -o "$tmp" "${srcs[@]}" "${uring[@]}"
  printf '%s\n' "$hash" >"$tmp.hash"
  # Library first, then its stamp: a reader never sees the new stamp beside an old library.
  mv -f "$tmp" "$lib"
  mv -f "$tmp.hash" "$lib.source-hash"
fi
