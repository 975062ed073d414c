"""Compose files for a deployment, and the compose CLI that this machine has.

One service per microservice instance, each with a fixed address on one private bridge network, all running
`manobench-target` with its MANOBENCH_SPEC in the environment. Two flavours:

- **run** files (`DockerRuntime`, written to the run's folder as `compose.yml`): the network is the run's
  own, created beforehand by the runtime (so the harness can listen on its gateway before any container
  starts) and referenced as external; services report events to the harness's collector.
- **standalone** files (`harness compose render`, the examples in compose/): the network is defined in the
  file, events go to each container's stdout (`docker-compose logs`), and a healthcheck says when each
  service is ready, so `docker-compose -f compose/centralised.yml up` works by hand.

The CLI is `docker compose` (v2+) where present, else `docker-compose` (1.29); $MANOBENCH_COMPOSE overrides.
Containers are found by compose's labels (`com.docker.compose.project` / `.service`), never by name: the
two CLIs name containers differently.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from typing import Any

import yaml

from harness.errors import UserError
from targets.spec import ServiceSpec

COMPOSE_VERSION = "2.4"  # understood by docker-compose 1.29 (cpus, mem_limit, ipv4_address) and by v2
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


@functools.cache
def cli() -> tuple[str, ...]:
    """The compose command line to use here."""
    forced = os.environ.get("MANOBENCH_COMPOSE")
    if forced:
        return tuple(shlex.split(forced))
    if shutil.which("docker"):
        try:
            v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=20,
                                check=False)
            if v2.returncode == 0:
                return ("docker", "compose")
        except subprocess.TimeoutExpired:
            pass
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise UserError("docker runtime: neither `docker compose` (v2) nor `docker-compose` is installed")


def run(project: str, file: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [*cli(), "-p", project, "-f", file, *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"{' '.join(argv[:-len(args) or None])} {args[0]}: no answer within {timeout:g} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"{' '.join(cli())} {args[0]} failed: {' | '.join(lines[-3:]) or proc.returncode}")
    return proc


def _escape(value: str) -> str:
    return value.replace("$", "$$")  # compose interpolates $VAR in values


def render(services: list[ServiceSpec], *, image: str, network: str, subnet: str, gateway: str,
           external: bool, labels: dict[str, str], cpus: float | None = None, memory: str | None = None,
           healthcheck: bool = False) -> dict[str, Any]:
    """The compose document (a dict; `dump` makes it YAML) for the given service specs."""
    doc: dict[str, Any] = {"version": COMPOSE_VERSION, "services": {}}
    if external:
        doc["networks"] = {network: {"external": True}}
    else:
        doc["networks"] = {network: {"driver": "bridge", "internal": True, "labels": dict(labels),
                                     "ipam": {"config": [{"subnet": subnet, "gateway": gateway}]}}}
    for spec in services:
        svc: dict[str, Any] = {
            "image": image,
            "command": ["python3", "-m", "targets"],
            "environment": {"MANOBENCH_SPEC": _escape(spec.to_json())},
            "labels": {**labels, "manobench.service": spec.id, "manobench.role": spec.role},
            "networks": {network: {"ipv4_address": spec.bind}},
            "stop_grace_period": "2s",
        }
        if cpus:
            svc["cpus"] = cpus
        if memory:
            svc["mem_limit"] = memory
        if healthcheck:
            url = f"http://{spec.bind}:{spec.ports['op']}/health"
            svc["healthcheck"] = {"test": ["CMD", "python3", "-c", f"import urllib.request; urllib.request.urlopen("
                                           f"'{url}', timeout=2)"], "interval": "5s", "timeout": "3s",
                                  "retries": 3, "start_period": "2s"}
        doc["services"][spec.id] = svc
    return doc


def dump(doc: dict[str, Any], header: str = "") -> str:
    body = yaml.safe_dump(doc, sort_keys=False, width=100000, default_flow_style=False)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


STANDALONE_SUBNETS = {"monolith": "10.203.0", "centralised": "10.203.1", "distributed": "10.203.2"}


def render_standalone(z: Any, block: str | None = None, image: str = "manobench-target:latest") -> str:
    """A compose file that runs design z by hand: `docker-compose -f FILE up`.

    Fixed addresses in `block`.0/24 (default 10.203.{0,1,2} per design), no latency proxies (links direct),
    events on each container's stdout, completion notices to the gateway (the host) on port 8100.
    """
    from harness.deploy import plan

    block = block or STANDALONE_SUBNETS[z.design]
    z = z.model_copy(update={"runtime": "docker"})
    hosts: dict[str, str] = {}

    def host_of(svc: str) -> str:
        return hosts.setdefault(svc, f"{block}.{len(hosts) + 2}")

    deployment = plan(z, f"standalone-{z.design}", host_of, f"{block}.1:8100", None)
    labels = {"manobench": "1", "manobench.standalone": z.design}
    doc = render(deployment.services, image=image, network="manobench", subnet=f"{block}.0/24",
                 gateway=f"{block}.1", external=False, labels=labels, healthcheck=True, cpus=z.container_cpus,
                 memory=z.container_memory)
    entry = ", ".join(deployment.entry)
    header = (f"manobench: the {z.design} design ({z.mechanism}, n={z.n}, k={z.k}), one container per service.\n"
              "Generated by `harness compose render`; do not edit by hand (change the config and render again).\n"
              "Needs the image: `harness image build` (tags manobench-target:latest). Then, by hand:\n"
              f"  docker-compose -p mb-{z.design} -f compose/{z.design}.yml up   (or: docker compose ...)\n"
              f"Requests enter at {entry} (POST /request, body {{\"req\": \"<uuid>\"}});\n"
              f"completion notices go to {block}.1:8100 on the host; events are on each container's stdout\n"
              "(`docker-compose logs`). No link latency: the harness\n"
              "adds it with its proxies (`harness run --runtime docker`).")
    return dump(doc, header)
