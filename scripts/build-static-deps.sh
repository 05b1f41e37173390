#!/usr/bin/env bash
# Builds position-independent static libelf and libbpf from Debian's own source packages
# (elfutils, libbpf) into OUTDIR, for scripts/prebuild.sh. Debian ships libelf.a and libbpf.a,
# but compiled without -fPIC, and a Node addon is a shared object, so they cannot be linked
# into it as they are. zlib's libz.a is PIC already and is used from the system.
# Usage: build-static-deps.sh OUTDIR
set -euo pipefail
out="$(realpath -m "$1")"
[ -f "$out/libelf.a" ] && [ -f "$out/libbpf.a" ] && exit 0
say() { printf 'build-static-deps: %s\n' "$*" >&2; }
mkdir -p "$out/src"
cd "$out/src"

if ! apt-get source --print-uris -qq elfutils >/dev/null 2>&1 || [ -z "$(apt-get source --print-uris -qq elfutils 2>/dev/null)" ]; then
  if [ "$(id -u)" != 0 ]; then
    say "needs Debian source packages (deb-src) for elfutils and libbpf; enable deb-src in /etc/apt/sources.list.d and run apt-get update, as root"
    exit 1
  fi
  say "enabling Debian source packages (deb-src)"
  for f in /etc/apt/sources.list.d/*.sources; do
    grep -q '^Types: deb$' "$f" || continue
    sed 's/^Types: deb$/Types: deb-src/' "$f" > "${f%.sources}-jouletrace-src.sources"
  done
  if [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/jouletrace-src.list
  fi
  apt-get update -qq >&2
fi

say "fetching Debian source packages elfutils and libbpf"
apt-get source -qq elfutils libbpf >&2 2>/dev/null || apt-get source -qq elfutils libbpf >&2

say "building libelf.a with -fPIC"
(
  cd elfutils-*/
  ./configure -q --disable-debuginfod --disable-libdebuginfod --without-zstd --without-bzlib --without-lzma \
    CFLAGS="-O2 -fPIC" >&2
  make -s -C lib -j"$(nproc)" >&2
  make -s -C libelf -j"$(nproc)" libelf.a >&2
  cp libelf/libelf.a "$out/"
)

say "building libbpf.a with -fPIC"
(
  cd libbpf-*/src
  mkdir -p "$out/libbpf-obj"
  make -s -j"$(nproc)" BUILD_STATIC_ONLY=1 OBJDIR="$out/libbpf-obj" CFLAGS="-O2 -fPIC" >&2
  cp "$out/libbpf-obj/libbpf.a" "$out/"
)
say "done: $out/libelf.a $out/libbpf.a"
