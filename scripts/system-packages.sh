# The Debian packages jouletrace needs, found missing by what they provide. Sourced by setup.sh
# (everything: the build, set-up's own tools and the test tools) and install-failed.sh (what the
# compile needs, and nothing else: a failure is blamed on no package it can do without).

# command → Debian package: what compiling the addon needs. src/native.ts names these too, in
# the error for an addon that is not built; test/install-failed.test.ts keeps the two lists the same.
declare -A BUILD_CMD_PKG=(
  [clang]=clang [make]=make [g++]=g++ [python3]=python3 [bpftool]=bpftool
)
# What set-up installs besides, which the compile does without: llvm-strip makes the embedded
# BPF object smaller (build-bpf.sh goes on without it), pkg-config tells libbpf's version (set-up
# refuses one before 1.0; binding.gyp links -lbpf without asking it).
declare -A SETUP_CMD_PKG=(
  [llvm-strip]=llvm [pkg-config]=pkg-config
)
declare -A TEST_CMD_PKG=(
  [capsh]=libcap2-bin  # the tests drop capabilities to check the unprivileged paths
  # tmux drives `jouletrace top` in a pseudo-terminal; chromium renders reports
  [tmux]=tmux [chromium]=chromium
  [promtool]=prometheus  # the observability tests run a real Prometheus and `promtool test rules`
)
# header → Debian package
declare -A BUILD_HDR_PKG=(
  [/usr/include/bpf/libbpf.h]=libbpf-dev [/usr/include/libelf.h]=libelf-dev [/usr/include/zlib.h]=zlib1g-dev
)

# The aarch64 C and C++ headers test/native-arch.test.ts compiles the addon against, so that
# nothing x86-only creeps into it. Adds to `missing` what is not there. libstdc++'s package is
# named by GCC's major version: the host g++'s, else (g++ not installed yet) the one apt's g++
# depends on; none where neither says (the test then names what to install). ARM64_SYSROOT
# moves where they are looked for (tests).
missing_arm64_headers() {
  local v root="${ARM64_SYSROOT:-/usr/aarch64-linux-gnu}"
  [ -e "$root/include/stdint.h" ] || missing+=(libc6-dev-arm64-cross)
  compgen -G "$root/include/c++/*/cstdint" >/dev/null && return 0
  v="$(g++ -dumpversion 2>/dev/null || apt-cache depends g++ 2>/dev/null | grep -oEm1 'g\+\+-[0-9]+' | cut -c5- || true)"
  [ -z "$v" ] || missing+=("libstdc++-${v%%.*}-dev-arm64-cross")
}

# Where bpftool may be besides PATH: /usr/sbin (off a non-root PATH), and where Ubuntu's
# linux-tools packages put the real one. Ubuntu's /usr/sbin/bpftool (linux-tools-common) is a
# wrapper that runs the running kernel's version and fails when that is not installed (a
# container on another kernel): a bpftool counts only if it runs.
# Prints the path of a bpftool that runs ($BPFTOOL first, as build-bpf.sh takes it), or fails.
# The places are glob patterns expanded at each call, so that one installed since
# (linux-tools-*) is found; BPFTOOL_PLACES, an array of patterns, replaces them (tests).
working_bpftool() {
  local b pattern patterns=(/usr/sbin/bpftool '/usr/lib/linux-tools/*/bpftool') places=() matches=()
  if declare -p BPFTOOL_PLACES >/dev/null 2>&1; then patterns=("${BPFTOOL_PLACES[@]}"); fi
  for pattern in "${patterns[@]}"; do
    mapfile -t matches < <(compgen -G "$pattern" || true)
    places+=("${matches[@]}")
  done
  for b in "${BPFTOOL:-}" "$(command -v bpftool)" "${places[@]}"; do
    if [ -x "$b" ] && "$b" version >/dev/null 2>&1; then echo "$b"; return 0; fi
  done
  return 1
}

# Adds to `missing` the package of each command in the named command → package table that is
# not on PATH (nor in /usr/sbin, off a non-root PATH), or for bpftool, none that runs.
missing_commands() {
  local -n table=$1
  local c
  for c in "${!table[@]}"; do
    if [ "$c" = bpftool ]; then
      working_bpftool >/dev/null || missing+=("${table[$c]}")
    elif ! command -v "$c" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$c" ]; then
      missing+=("${table[$c]}")
    fi
  done
}

# node-gyp compiles against the running Node's headers (scripts/node-headers.mjs finds them).
# Debian's and Ubuntu's nodejs leaves them to libnode-dev, built from the same source at the same
# version; theirs is the nodejs package that depends on libnodeN (NodeSource's ships the headers
# itself). Adds libnode-dev to `missing` where that nodejs is the node on PATH and they are not
# there. JOULETRACE_DEBIAN_NODE moves where Debian's node is looked for (tests).
missing_node_headers() {
  local node="${JOULETRACE_DEBIAN_NODE:-/usr/bin/node}" owner deps
  [ "$(command -v node)" -ef "$node" ] || return 0
  [ -e "${node%/bin/node}/include/node/node_version.h" ] && return 0
  owner="$(dpkg-query -S "$node" 2>/dev/null)" && [[ "$owner" == "nodejs: "* ]] || return 0
  deps="$(dpkg-query -W -f='${Depends}' nodejs 2>/dev/null)" || return 0
  if [[ "$deps" =~ (^|,\ )libnode[0-9]+(\ |,|$) ]]; then missing+=(libnode-dev); fi
}

# missing_packages build|setup|all: sets the array `missing`, sorted, no repeats. build: what the
# compile needs; setup: and set-up's own tools; all: and the test tools.
missing_packages() {
  local h
  missing=()
  missing_commands BUILD_CMD_PKG
  missing_node_headers
  if [ "$1" != build ]; then missing_commands SETUP_CMD_PKG; fi
  if [ "$1" = all ]; then missing_commands TEST_CMD_PKG; missing_arm64_headers; fi
  for h in "${!BUILD_HDR_PKG[@]}"; do
    [ -e "$h" ] || missing+=("${BUILD_HDR_PKG[$h]}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u); fi
}

# Rewrites `missing` into names apt can install here: Ubuntu (and its derivatives) ships
# Chromium only as a snap (its apt package installs the snap, which fails without snapd, as in a
# container): it is left out there, and the one test that renders a report in it skips. Decided
# by /etc/os-release, not by asking apt, whose package lists may be empty (a container image
# before `apt-get update`). For bpftool, apt is asked: a package of its name where it has one,
# else Ubuntu's linux-tools-$(uname -r); a container on another kernel has no such package, and
# naming it would fail the whole install: then linux-tools-generic, whose bpftool
# working_bpftool finds.
apt_names() {
  local id=" " release="${JOULETRACE_OS_RELEASE:-/etc/os-release}" kept=() p
  # shellcheck disable=SC1090
  [ -r "$release" ] && id=" $(. "$release" && echo "${ID:-} ${ID_LIKE:-}") "
  [[ "$id" == *" ubuntu "* ]] || return 0
  for p in "${missing[@]}"; do
    case "$p" in
      bpftool)
        if apt_knows bpftool; then kept+=(bpftool)
        elif apt_knows "linux-tools-$(uname -r)"; then kept+=(linux-tools-common "linux-tools-$(uname -r)")
        else kept+=(linux-tools-generic)
        fi ;;
      chromium) ;;
      *) kept+=("$p") ;;
    esac
  done
  missing=("${kept[@]}")
}

apt_knows() { apt-cache show "$1" >/dev/null 2>&1; }

# libbpf 1.0 brought the API the addon uses (Debian 11 and Ubuntu 22.04 ship 0.x). Prints why the
# installed one will not do, and fails; prints nothing and succeeds when it will.
libbpf_too_old() {
  pkg-config --atleast-version=1.0 libbpf 2>/dev/null && return 1
  echo "libbpf $(pkg-config --modversion libbpf 2>/dev/null || echo '(none)') is too old: the addon needs libbpf 1.0 or later (Debian 12, Ubuntu 24.04 and later ship it)"
}
