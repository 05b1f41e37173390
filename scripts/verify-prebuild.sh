#!/usr/bin/env bash
# Checks a prebuilt addon before it ships (scripts/prebuild.sh runs it): libbpf, libelf and zlib
# are not dynamic dependencies, every symbol it needs resolves now, and, where eBPF can run here,
# it opens a BPF thread tracker (libbpf reading the embedded skeleton with libelf). Says which
# glibc it needs at least.
# A shared object links with symbols undefined, `ldd` does not list them, and a lazy dlopen
# succeeds: a static library missing from the link (libeu.a under libelf.a of elfutils >= 0.191)
# showed only when the first call into it killed the user's process.
# Usage: verify-prebuild.sh ADDON.node
set -euo pipefail
bin="$1"
say() { printf 'prebuild: %s\n' "$*" >&2; }
if ldd "$bin" | grep -E 'lib(bpf|elf|z)\.so'; then
  say "$bin still links libbpf/libelf/libz dynamically"
  exit 1
fi
# The newest glibc (and libstdc++) symbol versions it needs: it loads nowhere they are older
# (built on Debian 13, glibc 2.41, it fails on Debian 12's 2.36), so build prebuilds on the oldest
# system they are for.
if command -v objdump >/dev/null 2>&1; then
  versions="$(objdump -T "$bin" | grep -oE 'GLIBC(XX)?_[0-9]+(\.[0-9]+)+' | sort -uV || true)"
  glibc="$(grep '^GLIBC_' <<<"$versions" | tail -1 || true)"
  glibcxx="$(grep '^GLIBCXX_' <<<"$versions" | tail -1 || true)"
  if [ -n "$glibcxx" ]; then
    say "$bin needs ${glibc:-no versioned glibc symbol} and $glibcxx (libstdc++): it loads where glibc and libstdc++ are those versions or newer"
  else
    say "$bin needs ${glibc:-no versioned glibc symbol}: it loads where glibc is that version or newer"
  fi
else
  say "objdump (binutils) not found: the newest glibc $bin needs was not checked"
fi
node -e '
const os = require("node:os");
const bin = process.argv[1];
const m = { exports: {} };
try {
  process.dlopen(m, bin, os.constants.dlopen.RTLD_NOW);
} catch (e) {
  console.error(`prebuild: ${bin} does not load with every symbol bound (RTLD_NOW): ${e.message}`);
  process.exit(1);
}
const ready = m.exports.bpfReadiness();
if (!ready.ready) {
  console.error(`prebuild: BPF thread tracker not tried here (${ready.reason})`);
} else {
  const tracker = new m.exports.ThreadTracker({ backend: "bpf" });
  tracker.snapshot();
  tracker.close();
  console.error("prebuild: BPF thread tracker opened");
}
' "$bin"
