# Shell functions shared by scripts/setup.sh and examples/tacker/setup.sh (sourced, not run): one check of
# Debian packages and one way to take the machine's heavy lock, so the two set-ups cannot drift apart.

MANOBENCH_HEAVY_LOCK=${MANOBENCH_HEAVY_LOCK:-/tmp/manobench-heavy.lock}

# heavy_held: true when this shell or one of its ancestors already holds the heavy lock (e.g. the set-up was
# started as `flock /tmp/manobench-heavy.lock bash ...`): taking it again would wait for ourselves for ever.
heavy_held() {
  [ -e "$MANOBENCH_HEAVY_LOCK" ] || return 1
  local inode holders pid
  inode=$(stat -c %i "$MANOBENCH_HEAVY_LOCK") || return 1
  holders=$(awk -v ino=":$inode" '$2 == "FLOCK" && $6 ~ ino"$" {print $5}' /proc/locks 2>/dev/null)
  [ -n "$holders" ] || return 1
  pid=$$
  while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
    for h in $holders; do [ "$h" = "$pid" ] && return 0; done
    pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)
  done
  return 1
}

# heavy CMD...: run CMD under the machine's heavy lock (several sessions share two cores), unless it is held
# by us already or flock is missing.
heavy() {
  if command -v flock >/dev/null 2>&1 && ! heavy_held; then flock "$MANOBENCH_HEAVY_LOCK" "$@"; else "$@"; fi
}

# apt_ensure WHO PKG...: install the Debian packages not installed yet (when root; else say which are
# missing, on stderr). Their own system services are not started (policy-rc.d 101): every run starts private
# nodes of its own (RabbitMQ, MariaDB), and a system one would only hold ports and memory.
apt_ensure() {
  local who=$1 pkg made_policy=0
  shift
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "$who: please install these Debian packages: ${missing[*]}" >&2
    return 0
  fi
  echo "$who: installing Debian packages: ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  local rc=0
  heavy bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null' \
    apt "${missing[@]}" || rc=$?
  if [ $made_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  return $rc
}
