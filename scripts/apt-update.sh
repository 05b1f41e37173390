# Sourced by setup.sh and build-static-deps.sh, which each define say().
# On a freshly booted machine apt-daily and unattended-upgrades may hold apt's locks for
# minutes. apt-get waits for dpkg's lock as long as DPkg::Lock::Timeout says (apt 1.9.11 and
# later: Debian 11, Ubuntu 20.04); `apt-get update` waits for no lock of its own, the package
# lists' (apt 2.6), so it is tried again while another apt holds that one, as long.
APT_LOCK_WAIT_S=600
apt_update() {
  local out waited=0
  until out="$(LC_ALL=C apt-get -o DPkg::Lock::Timeout=$APT_LOCK_WAIT_S update -qq 2>&1)"; do
    if [[ "$out" != *"Could not get lock"* ]] || [ "$waited" -ge "$APT_LOCK_WAIT_S" ]; then
      printf '%s\n' "$out" >&2
      return 1
    fi
    [ "$waited" != 0 ] || say "another apt holds the package lists' lock; waiting for it (up to $((APT_LOCK_WAIT_S / 60)) minutes)"
    sleep 5
    waited=$((waited + 5))
  done
  [ -z "$out" ] || printf '%s\n' "$out" >&2
}
