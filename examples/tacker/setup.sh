#!/usr/bin/env bash
# Idempotent set-up of the Tacker example: Debian's MariaDB and RabbitMQ servers (when root), and OpenStack
# Tacker from PyPI in a virtualenv of its own (.venv-tacker at the repository's root: Tacker's pins clash
# with manobench's). A second run takes about a second. Heavy steps run under the machine's heavy lock.
set -euo pipefail
cd "$(dirname "$0")/../.."

TACKER_VERSION=${TACKER_VERSION:-"tacker>=16,<17"}
VENV=.venv-tacker
LOCK=/tmp/manobench-heavy.lock
heavy() { if command -v flock >/dev/null 2>&1; then flock "$LOCK" "$@"; else "$@"; fi; }

APT_PACKAGES=(mariadb-server rabbitmq-server)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "tacker setup: installing Debian packages: ${missing[*]}"
    # policy-rc.d 101: the packages' own system services are not started (every run starts private nodes)
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    heavy bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]} >/dev/null"
    if [ $made_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "tacker setup: please install these Debian packages: ${missing[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3.11}
if [ ! -x "$VENV/bin/python" ]; then
  echo "tacker setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
stamp=$VENV/.manobench-installed
if [ ! -f "$stamp" ] || [ examples/tacker/setup.sh -nt "$stamp" ]; then
  echo "tacker setup: installing $TACKER_VERSION into $VENV"
  heavy "$VENV/bin/python" -m pip install -q --upgrade pip
  # PyMySQL: oslo.db's mysql+pymysql driver; aiohttp: the VIM stub, the client and the smoke test
  heavy "$VENV/bin/python" -m pip install -q "$TACKER_VERSION" PyMySQL aiohttp psutil
  touch "$stamp"
fi
echo "tacker setup: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("tacker", m.version("tacker"))')"
