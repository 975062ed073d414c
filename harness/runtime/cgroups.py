"""A container's kernel-side facts, read on the Engine's host without asking the Engine: its cgroup (CPU, peak
memory, the freezer) and the host end of its veth.

Why not the Engine API: its stats take up to 0.9 s per container here (one-shot, through the SDK) and its
pause 10-20 ms, while these are file reads and writes of microseconds (80 us per container sampled), which
is what lets the sampler run every 0.5 s at 0.2% of a core and a freeze land at the point of a workflow a
fault aims at. `runs_here` says whether a pid
the Engine reports is a process of this host's container at all (a remote Engine's pids are not), so a
direct signal or freeze is only ever sent to the container's own process.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path


def _cgroup_paths(pid: int) -> dict[str, str]:
    """controller -> path for a process ('' key: the v2 unified hierarchy)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def cgroup_version() -> int:
    return 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


@dataclass
class CgroupFiles:
    """Where one container's accounting lives (found once, while it runs)."""

    cpu: Path | None = None  # v1: the cpuacct directory; v2: cpu.stat
    memory: Path | None = None  # peak (v1 max_usage_in_bytes, v2 memory.peak) or current
    freezer: Path | None = None  # v1 freezer.state, v2 cgroup.freeze
    version: int = 1

    @property
    def frozen(self) -> str:
        return "1" if self.version == 2 else "FROZEN"

    @property
    def thawed(self) -> str:
        return "0" if self.version == 2 else "THAWED"

    @classmethod
    def of(cls, pid: int) -> CgroupFiles:
        paths = _cgroup_paths(pid)
        root = Path("/sys/fs/cgroup")
        if "" in paths and cgroup_version() == 2:
            d = root / paths[""].lstrip("/")
            return cls(_first(d / "cpu.stat"), _first(d / "memory.peak", d / "memory.current"),
                       _first(d / "cgroup.freeze"), 2)
        cpu = None
        if "cpuacct" in paths:
            rel = paths["cpuacct"].lstrip("/")
            cpu = _first(*(root / m / rel for m in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")))
        mem = None
        if "memory" in paths:
            d = root / "memory" / paths["memory"].lstrip("/")
            mem = _first(d / "memory.max_usage_in_bytes", d / "memory.usage_in_bytes")
        frz = None
        if "freezer" in paths:
            frz = _first(root / "freezer" / paths["freezer"].lstrip("/") / "freezer.state")
        return cls(cpu, mem, frz, 1)

    def cpu_seconds(self) -> tuple[float, float] | None:
        """(user, system) CPU seconds of the whole container, or None once it is gone."""
        try:
            if self.cpu is None:
                return None
            if self.version == 2:
                stat = dict(line.split() for line in self.cpu.read_text().splitlines())
                return int(stat["user_usec"]) / 1e6, int(stat["system_usec"]) / 1e6
            # cpuacct.usage is exact (ns of run time, like schedstat); cpuacct.stat and usage_user/usage_sys are
            # split by timer ticks and can be 20-30% off for a process that runs in short bursts: the split only
            # is taken from cpuacct.stat.
            total = int((self.cpu / "cpuacct.usage").read_text()) / 1e9
            stat = dict(line.split() for line in (self.cpu / "cpuacct.stat").read_text().splitlines())
            ticks_user, ticks_sys = int(stat["user"]), int(stat["system"])
            share = ticks_user / (ticks_user + ticks_sys) if ticks_user + ticks_sys else 1.0
            return total * share, total * (1 - share)
        except (OSError, ValueError, KeyError):
            return None

    def memory_bytes(self) -> int | None:
        try:
            return int(self.memory.read_text()) if self.memory else None
        except (OSError, ValueError):
            return None


def host_veth(pid: int) -> str | None:
    """The host side of a container's eth0: its peer's ifindex, read through the container's own /sys."""
    try:
        index = int(Path(f"/proc/{pid}/root/sys/class/net/eth0/iflink").read_text())
        return socket.if_indextoname(index)
    except (OSError, ValueError):
        return None


def veth_bytes(veth: str | None) -> tuple[int, int] | None:
    """(rx, tx) of the host-side veth: rx = what the container sent, tx = what it received."""
    if not veth:
        return None
    try:
        stats = Path(f"/sys/class/net/{veth}/statistics")
        return int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())
    except (OSError, ValueError):
        return None


def runs_here(pid: int, container_id: str) -> bool:
    """Whether `pid` is a process of this container on this host: its cgroup path names the container's id
    (cgroupfs `/docker/<id>`, systemd `docker-<id>.scope`, v1 and v2)."""
    if pid <= 0 or not container_id:
        return False
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def thaw(pid: int) -> None:
    """Undo a freeze written to the container's freezer (which `docker unpause` does not know about)."""
    cg = CgroupFiles.of(pid)
    if cg.freezer is not None:
        with contextlib.suppress(OSError):
            cg.freezer.write_text(cg.thawed)
