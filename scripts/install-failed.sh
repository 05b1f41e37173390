#!/usr/bin/env bash
# Runs when `npm install jouletrace` (scripts/install.mjs) found no prebuilt binary that loads and
# could not compile the addon: says why the prebuilt binary does not load, where there is one,
# which system packages are missing, if any, or that this Node's headers are, then fails the
# install as before.
here="${BASH_SOURCE[0]%/*}"
# shellcheck source=scripts/system-packages.sh
source "$here/system-packages.sh"
missing_packages build
say() { printf 'jouletrace: %s\n' "$*" >&2; }
read -r target node_version < <(node -p 'process.platform + "-" + process.arch + " " + process.versions.node')
found="no prebuilt binary for $target, Node $node_version"
# One that is there but does not load (built where glibc is newer, say) reads as none in
# node-gyp-build's message, which drops the loader's error: that error says what to do.
for f in "$here/../prebuilds/$target"/*.node; do
  [ -e "$f" ] || continue
  if ! err="$(node -e 'try { process.dlopen({ exports: {} }, process.argv[1]) } catch (e) { console.log(e.message); process.exit(1) }' "$f")"; then
    say "the prebuilt binary prebuilds/$target/${f##*/} does not load here: $err"
    found="no prebuilt binary that loads on $target, Node $node_version"
  fi
done
# Without this Node's headers, install.mjs compiled nothing rather than have node-gyp download them.
headers=true
if why="$(node "$here/node-headers.mjs")"; then
  say "$found, and compiling the addon failed (see above)."
else
  headers=false
  say "$found, and the addon was not compiled: $why."
fi
# Where libbpf-dev is there, it may still be too old; pkg-config tells, where there is one.
old_libbpf="" unchecked=""
if [[ " ${missing[*]} " != *" libbpf-dev "* ]]; then
  if command -v pkg-config >/dev/null 2>&1; then
    old_libbpf="$(libbpf_too_old)" || true
  else
    unchecked="libbpf's version was not checked (no pkg-config): the addon needs libbpf 1.0 or later (Debian 12, Ubuntu 24.04 and later ship it)"
  fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_names
  say "missing system packages: ${missing[*]}"
  say "install them, then run the install again:  sudo apt-get install ${missing[*]}"
fi
if [ -n "$old_libbpf" ]; then
  say "$old_libbpf"
fi
if [ "${#missing[@]}" = 0 ] && [ -z "$old_libbpf" ] && $headers; then
  say "the build packages are all installed; the compiler's output above says what failed."
fi
if [ -n "$unchecked" ]; then
  say "$unchecked"
fi
exit 1
