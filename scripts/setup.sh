#!/usr/bin/env bash
# Everything `npm run demo` and `npm run bench` need, from a fresh clone: system build packages
# (apt, when missing and when we are root), npm dependencies, the native addon with its embedded
# BPF program, and the compiled TypeScript. With --test (`npm test`), also the tools the tests
# drive, and the arm64 headers a test compiles the addon against. Each step is skipped when
# already done, so repeated runs cost well under a second.
# Usage: setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'jouletrace setup: %s\n' "$*" >&2; }

case "${1:-}" in
  '') want=setup ;;
  --test) want=all ;;
  *) say "unknown argument $1 (usage: setup.sh [--test])"; exit 2 ;;
esac

# shellcheck source=scripts/apt-update.sh
source scripts/apt-update.sh

# apt-get install, with no service of the packages started then or at boot: Debian's prometheus
# package would otherwise start a server on :9090, on every interface, at every boot; the tests
# run their own on 127.0.0.1. A policy-rc.d answering 101 keeps the maintainer scripts from
# starting services (one already there is left as it is); the units they enabled are disabled.
# JOULETRACE_POLICY_RC_D moves the policy file, for tests.
install_without_services() {
  local policy="${JOULETRACE_POLICY_RC_D:-/usr/sbin/policy-rc.d}" ours=false p unit
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# jouletrace setup: no service starts while it installs packages.\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    ours=true
    trap "rm -f $(printf %q "$policy")" EXIT
  fi
  # Whatever apt-get answers: a package configured before another failed has its units too.
  local rc=0
  apt-get -o DPkg::Lock::Timeout=$APT_LOCK_WAIT_S install -y -qq --no-install-recommends "$@" >&2 || rc=$?
  if $ours; then rm -f "$policy"; trap - EXIT; fi
  command -v systemctl >/dev/null 2>&1 || return $rc
  for p in "$@"; do
    for unit in $(dpkg-query -L "$p" 2>/dev/null | grep -E '^(/usr)?/lib/systemd/system/[^/]+\.service$' || true); do
      unit="${unit##*/}"
      say "disabling $unit, installed by $p (the tests start their own server when they need one)"
      systemctl --no-reload --quiet disable "$unit" >&2 || say "could not disable $unit; do it yourself: systemctl disable $unit"
    done
  done
  return $rc
}

# Debian 12 and Ubuntu 24.04 ship Node 18 with apt: the wrong Node fails later, less clearly.
if ! command -v node >/dev/null 2>&1 || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  say "Node.js $(node --version 2>/dev/null || echo '(none)') is too old or missing: jouletrace needs Node 20 or later (from nodejs.org or NodeSource)"
  exit 1
fi

# shellcheck source=scripts/system-packages.sh
source scripts/system-packages.sh
missing_packages "$want"
# Before the test: on Ubuntu a missing chromium alone leaves nothing to install.
apt_names
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt_update
    # Named again now that apt knows its packages: bpftool's is chosen by what apt has.
    missing_packages "$want"
    apt_names
    say "installing system packages: ${missing[*]}"
    install_without_services "${missing[@]}"
    if ! working_bpftool >/dev/null; then
      say "bpftool does not run here although ${missing[*]} installed; install one that does, or set BPFTOOL to its path"
      exit 1
    fi
  else
    say "missing system packages: ${missing[*]}"
    say "install them first, e.g.:  sudo apt-get install ${missing[*]}"
    say "(set-up installs them itself only when run as root on a system with apt-get)"
    exit 1
  fi
fi

if why="$(libbpf_too_old)"; then
  say "$why"
  exit 1
fi

# node-gyp compiles against this Node's own headers, found beside it (libnode-dev, where Debian's
# nodejs is the node, was installed above), and downloads none: exported for the install script
# `npm ci` runs, and for the rebuild below. Asked only when one of them is about to run.
use_node_headers() {
  local out
  if ! out="$(node scripts/node-headers.mjs)"; then say "$out."; exit 1; fi
  export npm_config_nodedir="$out"
}

# npm dependencies (this also builds the addon through the package's install script).
# A worktree may share another checkout's node_modules through a symlink: `npm ci` would empty
# the link's target, so a linked node_modules is only installed into when it lacks a package.
if [ -L node_modules ]; then
  if [ ! -f node_modules/.package-lock.json ]; then
    say "node_modules is a link to an empty install; run npm install where it points"
    exit 1
  fi
elif [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  use_node_headers
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
fi

# Native addon: rebuild when any native or BPF source is newer than the binary.
addon=build/Release/jouletrace.node
if [ ! -f "$addon" ] || [ -n "$(find native bpf binding.gyp scripts/build-bpf.sh -newer "$addon" -print -quit)" ]; then
  say "building the native addon and BPF program"
  use_node_headers
  npx --no-install node-gyp rebuild -j 2 >&2 || { say "native build failed (see above)"; exit 1; }
fi

# TypeScript → dist/ (ESM and CJS).
if [ ! -f dist/cjs/index.js ] || [ -n "$(find src tsconfig.json scripts/build-ts.mjs -newer dist/cjs/index.js -print -quit)" ]; then
  say "compiling TypeScript"
  node scripts/build-ts.mjs >&2
fi
