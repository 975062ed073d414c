#!/usr/bin/env bash
# Idempotent set-up of the Tacker example: Debian's MariaDB and RabbitMQ servers (when root), and OpenStack
# Tacker from PyPI in a virtualenv of its own (.venv-tacker at the repository's root: Tacker's pins clash
# with manobench's). A second run takes about a second. Heavy steps run under the machine's heavy lock.
set -euo pipefail
cd "$(dirname "$0")/../.."

TACKER_VERSION=${TACKER_VERSION:-"tacker>=16,<17"}
VENV=.venv-tacker
. scripts/lib.sh  # apt_ensure, heavy: shared with scripts/setup.sh

apt_ensure "tacker setup" mariadb-server rabbitmq-server

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
