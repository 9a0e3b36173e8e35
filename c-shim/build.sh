#!/usr/bin/env bash
# Builds the C shim into c-shim/build/libbunring.so (and, with --asan, an ASan+UBSan variant and the
# C test driver). Installs liburing-dev through apt when its headers are missing and we are root;
# otherwise says which package to install. Rebuilds only when a source is newer than the library.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/build"
quiet=0
asan=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    --asan) asan=1 ;;
    --force) rm -rf "$out" ;;
    *) echo "build.sh: unknown argument '$arg' (allowed: --quiet, --asan, --force)" >&2; exit 2 ;;
  esac
done
say() { [ "$quiet" = 1 ] || echo "$@"; }

ensure_liburing() {
  if echo '#include <liburing.h>' | cc -E -x c - >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bunring: installing liburing-dev (io_uring headers and library) with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq liburing-dev >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null && apt-get install -y -qq liburing-dev >/dev/null
    }
    return 0
  fi
  echo "bunring: the liburing headers are missing. Install the package 'liburing-dev' (Debian/Ubuntu: sudo apt-get install liburing-dev) and run this again." >&2
  exit 1
}

# Rebuild when the target is missing or older than any C source or header.
stale() {
  local target=$1
  [ -f "$target" ] || return 0
  [ -n "$(find "$here" -maxdepth 1 \( -name '*.c' -o -name '*.h' -o -name 'build.sh' \) -newer "$target" -print -quit)" ]
}

command -v cc >/dev/null 2>&1 || { echo "bunring: no C compiler 'cc' found; install build-essential" >&2; exit 1; }
mkdir -p "$out"
cflags=(-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread)
srcs=("$here"/*.c)

if stale "$out/libbunring.so"; then
  ensure_liburing
  say "bunring: building c-shim/build/libbunring.so"
  cc "${cflags[@]}" -shared -o "$out/libbunring.so.tmp" "${srcs[@]}" -luring
  mv "$out/libbunring.so.tmp" "$out/libbunring.so"
fi

if [ "$asan" = 1 ]; then
  driver="$here/../tests/c/driver.c"
  if stale "$out/driver-asan" || [ "$driver" -nt "$out/driver-asan" ]; then
    ensure_liburing
    say "bunring: building c-shim/build/driver-asan and driver-plain (sanitizer and valgrind drivers)"
    san=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    cc "${cflags[@]/-O2/-O1}" "${san[@]}" -I"$here" -o "$out/driver-asan" "$driver" "${srcs[@]}" -luring
    cc "${cflags[@]}" -I"$here" -o "$out/driver-plain" "$driver" "${srcs[@]}" -luring
  fi
fi
