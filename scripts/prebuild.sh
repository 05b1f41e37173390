#!/usr/bin/env bash
# Builds prebuilds/linux-<arch>/jouletrace.node with prebuildify (N-API, stripped) and libbpf,
# libelf and zlib linked statically, so users of the prebuilt binary need neither a compiler
# nor those libraries. Verifies the result with scripts/verify-prebuild.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# It names what it needs and is missing (dpkg-dev, make, gcc) before it starts.
bash scripts/build-static-deps.sh .static-deps
export JOULETRACE_STATIC_LIBBPF=1
export JOULETRACE_STATIC_DIR="$PWD/.static-deps"
# node-gyp, under prebuildify, compiles against this Node's own headers (as in setup.sh), and
# downloads none.
nodedir="$(node scripts/node-headers.mjs)" || { echo "prebuild: $nodedir." >&2; exit 1; }
export npm_config_nodedir="$nodedir"
npx --no-install prebuildify --napi --strip --target "$(node -p process.versions.node)"
bin="$(ls prebuilds/linux-*/*.node | head -1)"
# The local build/ directory now holds the static variant; rebuild it normally next time.
touch binding.gyp
bash scripts/verify-prebuild.sh "$bin"
echo "prebuild: $bin ($(du -h "$bin" | cut -f1)); dynamic dependencies:"
ldd "$bin"
