#!/usr/bin/env bash
# Builds prebuilds/linux-<arch>/jouletrace.node with prebuildify (N-API, stripped) and libbpf,
# libelf and zlib linked statically, so users of the prebuilt binary need neither a compiler
# nor those libraries. Verifies the result with ldd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v make >/dev/null && command -v gcc >/dev/null
bash scripts/build-static-deps.sh .static-deps
export JOULETRACE_STATIC_LIBBPF=1
export JOULETRACE_STATIC_DIR="$PWD/.static-deps"
npx --no-install prebuildify --napi --strip --target "$(node -p process.versions.node)"
bin="$(ls prebuilds/linux-*/*.node | head -1)"
if ldd "$bin" | grep -E 'lib(bpf|elf|z)\.so'; then
  echo "prebuild: $bin still links libbpf/libelf/libz dynamically" >&2
  exit 1
fi
echo "prebuild: $bin ($(du -h "$bin" | cut -f1)); dynamic dependencies:"
ldd "$bin"
# The local build/ directory now holds the static variant; rebuild it normally next time.
touch binding.gyp
