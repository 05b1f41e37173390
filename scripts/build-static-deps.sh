#!/usr/bin/env bash
# Builds position-independent static libelf and libbpf from Debian's own source packages
# (elfutils, libbpf) into OUTDIR, for scripts/prebuild.sh. Debian ships libelf.a and libbpf.a,
# but compiled without -fPIC, and a Node addon is a shared object, so they cannot be linked
# into it as they are. zlib's libz.a is PIC already and is used from the system. libeu.a,
# elfutils' internal utility library, comes along: libelf.a calls into it from elfutils 0.191 on.
# Usage: build-static-deps.sh OUTDIR
set -euo pipefail
out="$(realpath -m "$1")"
say() { printf 'build-static-deps: %s\n' "$*" >&2; }
# shellcheck source=scripts/apt-update.sh
source "${BASH_SOURCE[0]%/*}/apt-update.sh"
# Done once the stamp written last is there (a build from before libeu.a was kept has none).
[ -f "$out/.complete" ] && exit 0
# apt-get source unpacks with dpkg-source, from dpkg-dev; the builds need make and a C compiler.
need=()
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
if [ "${#need[@]}" -gt 0 ]; then
  say "needs ${need[*]} to fetch and build the source packages: apt-get install ${need[*]}"
  exit 1
fi
rm -rf "$out/src" "$out"/lib*.a "$out/libbpf-obj"
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
  apt_update
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
  if [ -f lib/libeu.a ]; then cp lib/libeu.a "$out/"; fi
)

say "building libbpf.a with -fPIC"
(
  cd libbpf-*/src
  mkdir -p "$out/libbpf-obj"
  make -s -j"$(nproc)" BUILD_STATIC_ONLY=1 OBJDIR="$out/libbpf-obj" CFLAGS="-O2 -fPIC" >&2
  cp "$out/libbpf-obj/libbpf.a" "$out/"
)
touch "$out/.complete"
say "done: $(cd "$out" && echo lib*.a)"
