#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian packages the harness needs (when root), then a virtualenv
# in .venv with manobench installed editable. Prints what it does; a second run takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh  # apt_ensure, heavy: shared with examples/tacker/setup.sh

APT_PACKAGES=(iproute2 procps tcpdump)  # tcpdump: scapy compiles its kernel BPF filters with it
APT_PACKAGES+=(rabbitmq-server)  # transport amqp: each run starts its own node (harness/runtime/broker.py)
APT_PACKAGES+=(mariadb-server)  # the Tacker target (examples/tacker): each run starts its own mariadbd
# The docker runtime (docs/docker.md): debootstrap makes the base image where no registry is reachable; the
# harness drives the Engine through the Docker SDK, and a compose CLI (`docker compose` v2 if the machine has
# it, else Debian's docker-compose) is for starting the compose files by hand and for the test that checks them.
if command -v docker >/dev/null 2>&1; then
  APT_PACKAGES+=(debootstrap)
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || APT_PACKAGES+=(docker-compose)
fi
apt_ensure setup "${APT_PACKAGES[@]}"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.manobench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing manobench and its test tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

# The foreign orchestrator (docs/targets.md): the paper's centralised design in Rust, which knows nothing of
# manobench but its target file; crates from the registry, seconds when nothing changed.
if command -v cargo >/dev/null 2>&1; then
  examples/foreign-rust/build.sh | sed 's/^/setup: /'
else
  echo "setup: no cargo here: the foreign Rust orchestrator (examples/foreign-rust) and its tests will be skipped"
fi

# OpenStack Tacker as a target (examples/tacker, docs/tacker.md): Tacker from PyPI in .venv-tacker (its pins
# clash with ours), so tests/test_tacker.py runs instead of skipping; ~30 s the first time, 0.1 s after.
if command -v "${TACKER_PYTHON:-python3.11}" >/dev/null 2>&1; then
  PYTHON="${TACKER_PYTHON:-python3.11}" bash examples/tacker/setup.sh | sed 's/^/setup: /'
else
  echo "setup: no python3.11 here: the Tacker target (examples/tacker) and its tests will be skipped"
fi

# The image every service container runs, cached by content: seconds when targets/ and docker/ did not change,
# a minute or two the first time on a machine where it has to be made with debootstrap.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] || docker ps >/dev/null 2>&1; then
    .venv/bin/harness image build | sed 's/^/setup: /'
    # the bus image (transport amqp in containers: the target + Debian's rabbitmq-server), cached the same way
    .venv/bin/python -m harness.runtime.broker_image | sed 's/^/setup: /'
  fi
else
  echo "setup: no Docker daemon here: the docker runtime and its tests will be skipped"
fi
