#!/usr/bin/env bash
# Compiles one BPF C file into a CO-RE object and a libbpf skeleton header.
# Usage: build-bpf.sh bpf/SRC.bpf.c OUTDIR [NAME [CLANG-FLAG...]]
#   → OUTDIR/NAME.bpf.o, OUTDIR/NAME.skel.h (NAME defaults to SRC). A NAME and flags build a
#   variant of the same source, e.g. a compatibility build for older kernels.
set -euo pipefail
src="$1"; out="$2"
name="${3:-$(basename "$src" .bpf.c)}"
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
CLANG="${CLANG:-clang}"
# shellcheck source=scripts/system-packages.sh
source "${BASH_SOURCE[0]%/*}/system-packages.sh"
BPFTOOL="${BPFTOOL:-$(working_bpftool || echo bpftool)}"
case "$(uname -m)" in
  x86_64) arch=x86 ;; aarch64) arch=arm64 ;; *) arch="$(uname -m)" ;;
esac
"$CLANG" -g -O2 -target bpf -D__TARGET_ARCH_"$arch" \
  -I"$(dirname "$src")" -I/usr/include/"$(uname -m)"-linux-gnu \
  -Wall -Werror "$@" -c "$src" -o "$out/$name.bpf.o"
# Strip DWARF but keep BTF: smaller embedded object, same CO-RE relocations.
llvm-strip -g "$out/$name.bpf.o" 2>/dev/null || true
"$BPFTOOL" gen skeleton "$out/$name.bpf.o" name "$name" > "$out/$name.skel.h.tmp"
mv "$out/$name.skel.h.tmp" "$out/$name.skel.h"
