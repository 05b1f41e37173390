# The Debian packages jouletrace needs, found missing by what they provide. Sourced by setup.sh
# (everything: the build and the test tools) and install-failed.sh (the build only).

# command → Debian package. src/native.ts names the build packages too, in the error for an
# addon that is not built; test/install-failed.test.ts keeps the two lists the same.
declare -A BUILD_CMD_PKG=(
  [clang]=clang [llvm-strip]=llvm [pkg-config]=pkg-config [make]=make [g++]=g++
  [python3]=python3 [bpftool]=bpftool
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

# Adds to `missing` the package of each command in the named command → package table that is
# not on PATH (nor in /usr/sbin, off a non-root PATH).
missing_commands() {
  local -n table=$1
  local c
  for c in "${!table[@]}"; do
    if ! command -v "$c" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$c" ]; then missing+=("${table[$c]}"); fi
  done
}

# missing_packages build|all: sets the array `missing`, sorted, no repeats.
missing_packages() {
  local h
  missing=()
  missing_commands BUILD_CMD_PKG
  if [ "$1" = all ]; then missing_commands TEST_CMD_PKG; fi
  for h in "${!BUILD_HDR_PKG[@]}"; do
    [ -e "$h" ] || missing+=("${BUILD_HDR_PKG[$h]}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u); fi
}

# Rewrites `missing` into names apt can install here: Ubuntu (and its derivatives) ships bpftool
# in linux-tools rather than a package of its own, and Chromium only as a snap (its apt package
# installs the snap, which fails without snapd, as in a container): it is left out there, and the
# one test that renders a report in it skips. Decided by /etc/os-release, not by asking apt,
# whose package lists may be empty (a container image before `apt-get update`).
apt_names() {
  local id=" " release="${JOULETRACE_OS_RELEASE:-/etc/os-release}" kept=() p
  # shellcheck disable=SC1090
  [ -r "$release" ] && id=" $(. "$release" && echo "${ID:-} ${ID_LIKE:-}") "
  [[ "$id" == *" ubuntu "* ]] || return 0
  for p in "${missing[@]}"; do
    case "$p" in
      bpftool) kept+=(linux-tools-common "linux-tools-$(uname -r)") ;;
      chromium) ;;
      *) kept+=("$p") ;;
    esac
  done
  missing=("${kept[@]}")
}

# libbpf 1.0 brought the API the addon uses (Debian 11 and Ubuntu 22.04 ship 0.x). Prints why the
# installed one will not do, and fails; prints nothing and succeeds when it will.
libbpf_too_old() {
  pkg-config --atleast-version=1.0 libbpf 2>/dev/null && return 1
  echo "libbpf $(pkg-config --modversion libbpf 2>/dev/null || echo '(none)') is too old: the addon needs libbpf 1.0 or later (Debian 12, Ubuntu 24.04 and later ship it)"
}
