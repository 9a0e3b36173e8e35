#!/usr/bin/env bash
# Builds the benchmark's load generator into bench/loadgen/build/libbunring_loadgen.so (`bun run
# build:loadgen`; `bun run client` and `bun run bench` run it with --quiet first). It is benchmark
# equipment, kept out of the product library (c-shim/), and built the same way: same flags, liburing
# linked statically when liburing.a is installed (else -luring). Rebuilds only when a C source,
# header or this script is newer than the library (ffi/loadgen.ts refuses a library older than its
# sources with the same rule); --force always rebuilds, --quiet prints nothing but errors. The
# library is linked under a temporary name and renamed into place, so a concurrent build never
# exposes a half-written file.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/build"
lib="$out/libbunring_loadgen.so"
quiet=0
force=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    --force) force=1 ;;
    *) echo "build.sh: unknown argument '$arg' (allowed: --quiet, --force)" >&2; exit 2 ;;
  esac
done
say() { [ "$quiet" = 1 ] || echo "$@"; }

stale() {
  [ "$force" = 1 ] && return 0
  [ -f "$lib" ] || return 0
  [ -n "$(find "$here" -maxdepth 1 \( -name '*.c' -o -name '*.h' -o -name 'build.sh' \) -newer "$lib" -print -quit)" ]
}

if ! stale; then
  say "bunring: $lib is up to date"
  exit 0
fi

if ! command -v cc >/dev/null 2>&1 || ! echo '#include <stdlib.h>' | cc -E -x c - >/dev/null 2>&1; then
  echo "bunring: cannot build the load generator: no working C compiler 'cc'. Install build-essential and liburing-dev (Debian/Ubuntu: sudo apt-get install build-essential liburing-dev)." >&2
  exit 1
fi
if ! echo '#include <liburing.h>' | cc -E -x c - >/dev/null 2>&1; then
  echo "bunring: cannot build the load generator: the liburing headers are missing. Install liburing-dev (Debian/Ubuntu: sudo apt-get install liburing-dev; Fedora: liburing-devel)." >&2
  exit 1
fi

cflags=(-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread)
# liburing statically, its symbols kept out of the library's dynamic exports.
uring=(-luring)
for a in /usr/lib/x86_64-linux-gnu/liburing.a "$(cc -print-file-name=liburing.a)"; do
  if [ "$a" != liburing.a ] && [ -f "$a" ]; then
    uring=("$a" -Wl,--exclude-libs,ALL)
    break
  fi
done

mkdir -p "$out"
say "bunring: building $lib"
tmp="$out/.libbunring_loadgen.so.${HOSTNAME:-host}.$$.tmp"
trap 'rm -f "$tmp"' EXIT
cc "${cflags[@]}" -shared -o "$tmp" "$here"/*.c "${uring[@]}"
mv -f "$tmp" "$lib"
