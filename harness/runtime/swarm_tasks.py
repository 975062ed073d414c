"""One swarm instance's task as it ran, and what was counted of it (containers.csv of a swarm run).

Apart from harness.runtime.swarm (the runtime) so that the runtime stays under the 600-line rule; the
counters are read the same way as the docker runtime's (cgroup files), the bytes from the task's own
network namespace (its eth0 on the overlay).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from harness.runtime.cgroups import CgroupFiles
from harness.runtime.swarm_nodes import Node


class TaskCounters(TypedDict, total=False):
    """The last reading of a task's counters (a key is missing until it was read once)."""

    cpu: float  # cgroup CPU seconds, user + system
    mem: int  # peak memory, bytes
    eth: tuple[int, int]  # (rx, tx) bytes of its eth0


def _eth_bytes(pid: int) -> tuple[int, int] | None:
    """(rx, tx) of eth0 in the namespace of `pid` (/proc/PID/net/dev is that namespace's view)."""
    try:
        for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == "eth0":
                fields = rest.split()
                return int(fields[0]), int(fields[8])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Task:
    """One instance's task as it ran: where, which container, and what was counted of it."""

    service: str
    node: Node
    container: str
    pid: int
    here: bool
    cgroup: CgroupFiles = field(default_factory=CgroupFiles)
    last: TaskCounters = field(default_factory=lambda: TaskCounters())

    def sample(self) -> None:
        if not self.here:
            return
        cpu = self.cgroup.cpu_seconds()
        if cpu is not None:
            self.last["cpu"] = sum(cpu)
        mem = self.cgroup.memory_bytes()
        if mem is not None:
            self.last["mem"] = max(mem, self.last.get("mem", 0))
        eth = _eth_bytes(self.pid)
        if eth is not None:
            self.last["eth"] = eth

    def row(self) -> dict[str, object]:
        """Its line of containers.csv (empty cells for what was not measured here)."""
        rx, tx = self.last.get("eth", ("", ""))
        cpu = self.last.get("cpu")
        return {"service": self.service, "node": self.node.hostname, "container": self.container[:12],
                "pid": self.pid if self.here else "", "measured": "here" if self.here else "agent",
                "cgroup_total_s": round(cpu, 6) if cpu is not None else "", "mem_peak_bytes": self.last.get("mem", ""),
                "eth_rx_bytes": rx, "eth_tx_bytes": tx}
