#!/usr/bin/env bash
# Builds the C test driver (tests/c/driver.c) with the server's sources (c-shim/*.c) and the load
# generator's (bench/loadgen/*.c) into tests/c/build/driver-asan (ASan+UBSan, -O1) and driver-plain
# (run under valgrind). Used by tests/c/run-sanitizers.ts (and so by tests/sanitizers.test.ts and
# `bun run test:asan`). The two libraries' headers share no name, so one program links both.
# Rebuilds only when a source, header or this script is newer than driver-asan; --force always
# rebuilds, --quiet prints nothing but errors.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
shim="$repo/c-shim"
loadgen="$repo/bench/loadgen"
out="$here/build"
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
  [ -f "$out/driver-asan" ] && [ -f "$out/driver-plain" ] || return 0
  [ -n "$(find "$shim" "$loadgen" "$here" -maxdepth 1 \( -name '*.c' -o -name '*.h' -o -name 'build.sh' \) -newer "$out/driver-asan" -print -quit)" ]
}

if ! stale; then
  say "bunring: tests/c/build/driver-asan and driver-plain are up to date"
  exit 0
fi
if ! echo '#include <liburing.h>' | cc -E -x c - >/dev/null 2>&1; then
  echo "bunring: cannot build the C test driver: needs a C compiler and the liburing headers (Debian/Ubuntu: sudo apt-get install build-essential liburing-dev)." >&2
  exit 1
fi

cflags=(-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread)
san=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
srcs=("$here/driver.c" "$shim"/*.c "$loadgen"/*.c)
inc=(-I"$shim" -I"$loadgen")

mkdir -p "$out"
say "bunring: building tests/c/build/driver-asan and driver-plain (sanitizer and valgrind drivers)"
# Linked under temporary names and renamed: a failed build leaves no half-written driver behind.
trap 'rm -f "$out/.driver-asan.$$" "$out/.driver-plain.$$"' EXIT
cc "${cflags[@]/-O2/-O1}" "${san[@]}" "${inc[@]}" -o "$out/.driver-asan.$$" "${srcs[@]}" -luring
cc "${cflags[@]}" "${inc[@]}" -o "$out/.driver-plain.$$" "${srcs[@]}" -luring
mv -f "$out/.driver-plain.$$" "$out/driver-plain"
mv -f "$out/.driver-asan.$$" "$out/driver-asan"
