"""The swarm as the harness sees it: whether the Engine is a manager of one, its usable nodes, and where each
instance of a design goes.

Placement is the harness's own decision, made before any service exists and written into each service as a
`node.id == ...` constraint, so it is recorded exactly (config.yaml, `swarm.placement`) and checked against
where each task really ran. The rule: the two (or k) instances of a replicated group (the SLMs `slm-a`,
`slm-b`, ...; the twins or worker replicas `m3a`, `m3b`) go to different nodes whenever there are enough;
groups are spread round-robin so that no node carries every group's first member. With one node everything
shares it (the one-node swarm of the tests). Labels can narrow the nodes: `$MANOBENCH_SWARM_LABEL`
(`key=value`) keeps only nodes carrying that label.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from harness.errors import UserError
from harness.runtime import engine

LABEL_ENV = "MANOBENCH_SWARM_LABEL"
_GROUP = re.compile(r"^(slm)-([a-z])$|^(m\d+)([a-z])$")


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    addr: str
    role: str
    labels: dict[str, str]


def state() -> tuple[str, bool]:
    """(LocalNodeState: inactive | active | pending | error | locked, whether this Engine is a manager)."""
    info = engine.client().info()
    swarm = info.get("Swarm") or {}
    return str(swarm.get("LocalNodeState", "inactive")), bool(swarm.get("ControlAvailable"))


def require_manager(what: str = "swarm runtime") -> None:
    """One line (exit 2) unless the Engine the client points at manages a swarm."""
    local, manager = state()
    if local != "active":
        raise UserError(f"{what}: this Docker Engine is in no swarm (state {local}): `docker swarm init` (or join "
                        "one) first, or point DOCKER_HOST / the docker context at a manager")
    if not manager:
        raise UserError(f"{what}: this Docker Engine is a swarm worker, not a manager: point DOCKER_HOST / the "
                        "docker context at a manager node")


def nodes(label: str | None = None) -> list[Node]:
    """Ready, active nodes (those carrying `label` key=value, or $MANOBENCH_SWARM_LABEL's), managers first."""
    label = label if label is not None else os.environ.get(LABEL_ENV) or None
    want = tuple(label.split("=", 1)) if label else None
    if want is not None and len(want) != 2:
        raise UserError(f"{LABEL_ENV} must be key=value, got {label!r}")
    found = []
    for n in engine.client().api.nodes():
        spec, status = n.get("Spec", {}), n.get("Status", {})
        labels = dict(spec.get("Labels") or {})
        if status.get("State") != "ready" or spec.get("Availability") != "active":
            continue
        if want is not None and labels.get(want[0]) != want[1]:
            continue
        found.append(Node(n["ID"], n.get("Description", {}).get("Hostname", n["ID"][:12]), status.get("Addr", ""),
                          spec.get("Role", "worker"), labels))
    if not found:
        raise UserError("swarm: no ready, active node" + (f" with label {label}" if label else ""))
    return sorted(found, key=lambda n: (n.role != "manager", n.hostname, n.id))


def group_of(svc_id: str) -> tuple[str, int]:
    """(group, member index): slm-b -> ("slm", 1), m3a -> ("m3", 0); any other id is a group of its own."""
    m = _GROUP.match(svc_id)
    if not m:
        return svc_id, 0
    name, letter = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return name, ord(letter) - ord("a")


class Placement:
    """Assigns each instance a node as the planner names them (`host_of` order)."""

    def __init__(self, available: list[Node]) -> None:
        self.nodes = available
        self.groups: dict[str, int] = {}
        self.where: dict[str, Node] = {}

    def node_for(self, svc_id: str) -> Node:
        if svc_id not in self.where:
            group, member = group_of(svc_id)
            base = self.groups.setdefault(group, len(self.groups))
            self.where[svc_id] = self.nodes[(base + member) % len(self.nodes)]
        return self.where[svc_id]

    def separated(self) -> bool:
        """Whether every replicated group's members are on different nodes (possible with enough nodes)."""
        by_group: dict[str, list[str]] = {}
        for svc, node in self.where.items():
            by_group.setdefault(group_of(svc)[0], []).append(node.id)
        return all(len(set(ids)) == min(len(ids), len(self.nodes)) for ids in by_group.values())


class ContainerStatus(TypedDict, total=False):
    ContainerID: str
    PID: int


class TaskStatus(TypedDict, total=False):
    State: str
    Err: str
    ContainerStatus: ContainerStatus


class NetworkAttachment(TypedDict, total=False):
    Network: dict[str, object]  # the network's ID, Spec, ...
    Addresses: list[str]  # "10.a.b.c/24"


class SwarmTask(TypedDict, total=False):
    """A swarm task as the Engine lists it (GET /tasks), as far as the runtime reads it."""

    ID: str
    NodeID: str
    CreatedAt: str  # RFC 3339: sorts in time order as text
    Status: TaskStatus
    NetworksAttachments: list[NetworkAttachment]


def task_of(service_id: str) -> SwarmTask | None:
    """The newest task of a service (replicas 1), or None before the orchestrator made one."""
    tasks = engine.client().api.tasks(filters={"service": service_id})
    return max(tasks, key=lambda t: t.get("CreatedAt", ""), default=None)


def task_address(task: SwarmTask, network_id: str) -> str | None:
    for att in task.get("NetworksAttachments") or []:
        if att.get("Network", {}).get("ID") == network_id and att.get("Addresses"):
            return str(att["Addresses"][0]).split("/")[0]
    return None


ENCRYPTION_ENV = "MANOBENCH_OVERLAY_ENCRYPTED"


def overlay_encryption() -> tuple[str, str]:
    """Whether the run's overlay is made with `--opt encrypted` ("on") or not ("off"), and why. The Engine
    accepts the option on any kernel, but it carries traffic between nodes over IPsec (ESP, xfrm): where the
    kernel lacks those, an encrypted overlay silently carries nothing between nodes. So it is asked for only
    where this host's kernel has esp4 and xfrm_user (loaded modules, or built in); MANOBENCH_OVERLAY_ENCRYPTED
    =0 or 1 overrides (1: the nodes' kernels are known to have them). Recorded in config.yaml's `swarm`."""
    forced = os.environ.get(ENCRYPTION_ENV, "")
    if forced in ("0", "1"):
        return ("on" if forced == "1" else "off"), f"{ENCRYPTION_ENV}={forced}"
    missing = [m for m in ("esp4", "xfrm_user") if not _kernel_has(m)]
    if missing:
        return "off", f"this kernel has no {' or '.join(missing)} (IPsec): the overlay is not encrypted"
    return "on", "IPsec (esp4, xfrm_user) available: --opt encrypted"


def _kernel_has(module: str) -> bool:
    if Path(f"/sys/module/{module}").exists():
        return True
    release = os.uname().release
    try:
        builtin = Path(f"/lib/modules/{release}/modules.builtin").read_text(encoding="utf-8")
    except OSError:
        return False
    return f"/{module}.ko" in builtin
