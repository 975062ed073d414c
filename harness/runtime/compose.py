"""Compose files for a deployment: the record of a run's containers and the files users start by hand.

One service per microservice instance, each with a fixed address on one private bridge network, all running
`manobench-target` with its MANOBENCH_SPEC in the environment. Two flavours:

- **run** files (`DockerRuntime`, written to the run's folder as `compose.yml`, the record of the deployment):
  the network is the run's own, created beforehand by the runtime (so the harness can listen on its gateway
  before any container starts) and referenced as external; services report events to the harness's
  collector.
- **standalone** files (`harness compose render`, the examples in compose/): the network is defined in the
  file, events go to each container's stdout (`docker-compose logs`), and a healthcheck says when each
  service is ready, so `docker-compose -f compose/centralised.yml up` works by hand.

The harness itself runs no compose CLI: the docker runtime creates a run's containers through the Docker SDK
from the document its `compose.yml` is written from (`container_args`), with compose's labels, so either
`docker compose` (v2) or `docker-compose` (1.29) can inspect them by hand. Containers are found by those
labels (`com.docker.compose.project` / `.service`), never by name.
"""

from __future__ import annotations

from typing import TypedDict

import yaml
from docker.types import EndpointConfig, HostConfig

from harness.plan import config
from harness.runtime.broker_node import IN_CONTAINER, SERVER
from protocol.bus import AMQP_PORT, BROKER_ID
from protocol.spec import ServiceSpec

COMPOSE_VERSION = "2.4"  # understood by docker-compose 1.29 (cpus, mem_limit, ipv4_address) and by v2
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
RUN_FILE_KEYS = {"image", "command", "environment", "labels", "networks", "stop_grace_period", "cpus", "mem_limit"}


class Healthcheck(TypedDict):
    """A standalone file's healthcheck: how `docker-compose up` knows a container is ready."""

    test: list[str]
    interval: str
    timeout: str
    retries: int
    start_period: str


class ComposeService(TypedDict, total=False):
    """One service of a compose document: the keys this module writes (RUN_FILE_KEYS, and a standalone
    file's healthcheck), each the type compose reads."""

    image: str | None  # None only for a target file's instance that names no image: refused by the Engine
    command: list[str]
    environment: dict[str, str]  # values escaped for compose's interpolation (`escape`)
    labels: dict[str, str]
    networks: dict[str, dict[str, str]]  # {network: {"ipv4_address": address}}
    stop_grace_period: str
    cpus: float
    mem_limit: str
    healthcheck: Healthcheck


class ComposeNetwork(TypedDict, total=False):
    """The network of a compose document: the run's (external) or a standalone file's own bridge."""

    external: bool
    driver: str
    internal: bool
    labels: dict[str, str]
    ipam: dict[str, list[dict[str, str]]]


class ComposeDocument(TypedDict, total=False):
    """A compose document as `render` makes it and `dump` writes it."""

    version: str
    services: dict[str, ComposeService]
    networks: dict[str, ComposeNetwork]


class ContainerArgs(TypedDict):
    """The keyword arguments of docker-py's `APIClient.create_container` that `container_args` fills."""

    image: str | None
    command: list[str]
    name: str
    environment: dict[str, str]
    labels: dict[str, str]
    host_config: HostConfig
    networking_config: dict[str, dict[str, EndpointConfig]]
    stop_timeout: int


def escape(value: str) -> str:
    return value.replace("$", "$$")  # compose interpolates $VAR in values


def _unescape(value: str) -> str:
    return value.replace("$$", "$")


def render(services: list[ServiceSpec], *, image: str, network: str, subnet: str, gateway: str,
           external: bool, labels: dict[str, str], cpus: float | None = None, memory: str | None = None,
           healthcheck: bool = False) -> ComposeDocument:
    """The compose document (a dict; `dump` makes it YAML) for the given service specs."""
    entries: dict[str, ComposeService] = {}
    doc: ComposeDocument = {"version": COMPOSE_VERSION, "services": entries}
    if external:
        doc["networks"] = {network: {"external": True}}
    else:
        doc["networks"] = {network: {"driver": "bridge", "internal": True, "labels": dict(labels),
                                     "ipam": {"config": [{"subnet": subnet, "gateway": gateway}]}}}
    for spec in services:
        svc: ComposeService = {
            "image": image,
            "command": ["python3", "-m", "targets"],
            "environment": {"MANOBENCH_SPEC": escape(spec.to_json())},
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
        entries[spec.id] = svc
    return doc


def container_name(project: str, service: str) -> str:
    """Compose v2's name for a service's one container."""
    return f"{project}-{service}-1"


def container_args(doc: ComposeDocument, service: str, project: str, api_version: str) -> ContainerArgs:
    """Docker Engine API `create_container` arguments (docker-py's APIClient) for one service of a run's
    compose document.

    The runtime creates its containers through the SDK from the same document it writes to `compose.yml`, so
    the file is the exact record of what ran, with no second description to drift from it. The container
    gets compose's own labels and name (`<project>-<service>-1`), so `docker compose -p <project> -f
    compose.yml ps | logs | down` work on a run's containers as on ones compose started. A key this
    translation does not know is refused rather than dropped.
    """
    svc = doc["services"][service]
    unknown = set(svc) - RUN_FILE_KEYS
    if unknown:
        raise ValueError(f"compose service {service}: no SDK translation for {sorted(unknown)}")
    ((network, endpoint),) = svc["networks"].items()
    nano_cpus = round(float(svc["cpus"]) * 1e9) if "cpus" in svc else None
    return {
        "image": svc["image"], "command": svc["command"], "name": container_name(project, service),
        "environment": {key: _unescape(value) for key, value in svc["environment"].items()},
        "labels": {**svc["labels"], PROJECT_LABEL: project, SERVICE_LABEL: service, NUMBER_LABEL: "1",
                   ONEOFF_LABEL: "False"},
        "host_config": HostConfig(api_version, network_mode=network, nano_cpus=nano_cpus,
                                  mem_limit=svc.get("mem_limit")),
        "networking_config": {"EndpointsConfig": {network: EndpointConfig(api_version,
                                                                          ipv4_address=endpoint["ipv4_address"])}},
        "stop_timeout": int(float(str(svc["stop_grace_period"]).removesuffix("s"))),
    }


def dump(doc: ComposeDocument, header: str = "") -> str:
    body = yaml.safe_dump(doc, sort_keys=False, width=100000, default_flow_style=False)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


STANDALONE_SUBNETS = {d: f"10.203.{i}" for i, d in enumerate(config.DESIGNS)}  # one block per design, in order


def broker_service(image: str, network: str, address: str, labels: dict[str, str], healthcheck: bool = False
                   ) -> ComposeService:
    """The run's broker as a compose service (harness.runtime.broker_node: the node): Debian's server script in
    the bus image, logging to stdout (the Engine keeps it: logs/broker.log of the run), AMQP on its address.
    In the run's compose.yml (the broker container is created from it) and in the standalone bus files."""
    svc: ComposeService = {
        "image": image, "command": [str(SERVER)],
        "environment": {**IN_CONTAINER, "RABBITMQ_NODE_IP_ADDRESS": address, "RABBITMQ_NODE_PORT": str(AMQP_PORT)},
        "labels": {**labels, "manobench.service": BROKER_ID, "manobench.role": BROKER_ID},
        "networks": {network: {"ipv4_address": address}}, "stop_grace_period": "2s"}
    if healthcheck:  # ready when it takes a TCP connection on its AMQP port (the harness waits for AMQP itself)
        svc["healthcheck"] = {"test": ["CMD", "python3", "-c", f"import socket; socket.create_connection("
                                       f"('{address}', {AMQP_PORT}), 2)"], "interval": "5s", "timeout": "3s",
                              "retries": 6, "start_period": "10s"}
    return svc


def standalone_name(z: config.Experiment) -> str:
    """The standalone file's name in compose/: the design, and `-amqp` for its bus variant (with the broker)."""
    return f"{z.design}-amqp" if z.transport == "amqp" and z.design != "monolith" else z.design


def render_standalone(z: config.Experiment, block: str | None = None, image: str | None = None) -> str:
    """A compose file that runs design z by hand: `docker-compose -f FILE up`.

    Fixed addresses in `block`.0/24 (default 10.203.{0,1,2} per design), no latency proxies (links direct),
    events on each container's stdout, completion notices to the gateway (the host) on port 8100. On the bus
    (transport amqp) the run's broker is one more service, and every service runs the bus image.
    """
    from harness.plan.deploy import BROKER, plan, uses_broker

    bus = uses_broker(z)
    image = image or ("manobench-bus:latest" if bus else "manobench-target:latest")
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
    if bus:
        doc["services"][BROKER] = broker_service(image, "manobench", host_of(BROKER), labels, healthcheck=True)
    entry = ", ".join(deployment.entry)
    built = ("`.venv/bin/python -m harness.runtime.broker_image` (tags manobench-bus:latest: the target\n"
             "image plus rabbitmq-server)" if bus else "`harness image build` (tags manobench-target:latest)")
    header = (f"manobench: the {z.design} design ({z.mechanism}, n={z.n}, k={z.k}), one container per service"
              + (f", on a RabbitMQ bus ({z.queues} queues).\n" if bus else ".\n")
              + "Generated by `harness compose render`; do not edit by hand (change the config and render again).\n"
              f"Needs the image: {built}. Then, by hand:\n"
              f"  docker-compose -p mb-{z.design} -f compose/{standalone_name(z)}.yml up   (or: docker compose ...)\n"
              f"Requests enter at {entry} (POST /request, body {{\"req\": \"<uuid>\"}});\n"
              f"completion notices go to {block}.1:8100 on the host; events are on each container's stdout\n"
              "(`docker-compose logs`). No link latency: the harness\n"
              "adds it with its proxies (`harness run --runtime docker`).")
    return dump(doc, header)
