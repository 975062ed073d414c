"""The docker runtime: one container per service instance on the run's own private bridge network.

Same interface as `LocalRuntime` (host_of, env, start_process, up, pid, kill, pause, resume, down, log_tail),
so `Testbed`, the faults and `harness run` do not care which one they drive.

- **Network**: per run a bridge network `mb<run>` (bridge device of the same name) on a free `10.a.b.0/24`,
  `--internal` (no route out of the machine), created by `prepare()` before anything else so the harness
  side (collector, BSS, Locust's BSS, the latency proxies) can listen on its gateway `10.a.b.1`, the host's
  own address on that bridge. Every service gets a fixed address `10.a.b.N`, N >= 2, known before any
  container exists, so the planner can write every address into the specs just as for the local runtime.
- **Containers**: a compose file (`compose.yml` in the run's folder, `harness.runtime.compose`) brought up
  with `docker compose` or `docker-compose`; containers are found by compose's labels, never by name.
  Everything (containers, network) carries `manobench=1`, `manobench.run`, `manobench.owner` (the harness
  pid: a dead owner makes a leftover that `harness clean` and the next `harness run` remove) and, under
  the test suite, `manobench.session`.
- **Faults**: crash = SIGKILL of the container's init process, which *is* the service (what `docker kill`
  sends; delivered directly because a docker CLI round trip takes ~100 ms and faults are aimed at a point of
  a workflow; $MANOBENCH_DOCKER_KILL=docker uses `docker kill` instead); pause = the cgroup freezer that
  `docker pause` uses (written directly for the same reason; `docker pause` where no freezer is found).
- **Measurement**: a sampler reads, per container, CPU from cgroup accounting (cgroup v1 `cpuacct.usage`,
  split into user/system by `cpuacct.stat`; v2 `cpu.stat`), peak memory, and the byte counters of the
  host-side veth; written to `containers.csv` beside the psutil figure of the same process as a cross-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from harness import image as images
from harness.errors import UserError
from harness.runtime import compose, wait_ready
from harness.runtime.local import SESSION_ENV, LocalRuntime
from targets.spec import ServiceSpec

HARNESS_SIDE = ("bss", "proxies", "collector", "harness", "locust")
BRIDGE_NETS_ENV = "MANOBENCH_BRIDGE_NETS"  # subnets of bridges this run created: proxyd may listen there
CONTAINER_COLUMNS = ["service", "container", "pid", "veth", "cgroup_user_s", "cgroup_system_s", "cgroup_total_s",
                     "proc_total_s", "cpu_agreement", "mem_peak_bytes", "veth_rx_bytes", "veth_tx_bytes"]


def labels(run: str) -> dict[str, str]:
    out = {"manobench": "1", "manobench.run": run, "manobench.owner": str(os.getpid())}
    if os.environ.get(SESSION_ENV):
        out["manobench.session"] = os.environ[SESSION_ENV]
    return out


def _taken_networks() -> list[IPv4Network]:
    """Every IPv4 network the host has an address or a route in."""
    nets: list[IPv4Network] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and a.netmask:
                with contextlib.suppress(ValueError):
                    nets.append(IPv4Network(f"{a.address}/{a.netmask}", strict=False))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            parts = line.split()
            dest, mask = int(parts[1], 16), int(parts[7], 16)
            if mask:
                net = IPv4Network((socket.inet_ntoa(dest.to_bytes(4, "little")),
                                   socket.inet_ntoa(mask.to_bytes(4, "little"))), strict=False)
                nets.append(net)
    return nets


def free_block(rng: random.Random | None = None) -> str:
    """A random 10.a.b prefix whose /24 overlaps nothing the host has (docker's own networks included)."""
    rng = rng or random.Random()
    taken = _taken_networks()
    for _ in range(200):
        block = f"10.{rng.randint(100, 250)}.{rng.randint(0, 255)}"
        net = IPv4Network(f"{block}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return block
    raise UserError("docker runtime: no free 10.x.y.0/24 for the run's network")


# --- cgroups, veths ---------------------------------------------------------------------------------------

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


@dataclass
class Container:
    service: str
    id: str
    pid: int
    cgroup: CgroupFiles
    veth: str | None
    proc: psutil.Process | None = None
    last: dict[str, Any] = field(default_factory=dict)

    def sample(self) -> None:
        cpu = self.cgroup.cpu_seconds()
        if cpu is not None:
            self.last["cgroup"] = cpu
        mem = self.cgroup.memory_bytes()
        if mem is not None:
            self.last["mem"] = max(mem, self.last.get("mem", 0))
        vb = veth_bytes(self.veth)
        if vb is not None:
            self.last["veth"] = vb
        if self.proc is not None:
            try:
                t = self.proc.cpu_times()
                self.last["proc"] = t.user + t.system + t.children_user + t.children_system
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                self.proc = None

    def row(self) -> dict[str, Any]:
        user, sys_ = self.last.get("cgroup", (float("nan"), float("nan")))
        total, proc = user + sys_, self.last.get("proc", float("nan"))
        rx, tx = self.last.get("veth", (None, None))
        return {"service": self.service, "container": self.id[:12], "pid": self.pid, "veth": self.veth or "",
                "cgroup_user_s": round(user, 6), "cgroup_system_s": round(sys_, 6), "cgroup_total_s": round(total, 6),
                "proc_total_s": round(proc, 6), "cpu_agreement": round(proc / total, 4) if total > 0 else "",
                "mem_peak_bytes": self.last.get("mem", ""), "veth_rx_bytes": rx, "veth_tx_bytes": tx}


class DockerRuntime:
    name = "docker"

    def __init__(self, run: str, workdir: Path, *, block: str | None = None, cpus: float | None = None,
                 memory: str | None = None, stats_interval: float = 0.5) -> None:
        self.run, self.workdir = run, Path(workdir)
        self.project = f"mb{run}"
        self.network = f"mb{run}"
        self.bridge = f"mb{run}"[:15]  # a Linux interface name has at most 15 characters
        self.block = block or free_block()
        self.subnet = f"{self.block}.0/24"
        self.gateway = f"{self.block}.1"
        self.capture_iface = self.bridge
        self.collector_host = self.gateway
        self.cpus = cpus if cpus is not None else _env_float("MANOBENCH_DOCKER_CPUS")
        self.memory = memory or os.environ.get("MANOBENCH_DOCKER_MEMORY") or None
        self.labels = labels(run)
        self.host = LocalRuntime(run, self.workdir, block="127.0.0")  # Locust and co. run on the host
        self.hosts: dict[str, str] = {}
        self.containers: dict[str, Container] = {}
        self.image: str | None = None
        self.compose_file = self.workdir / "compose.yml"
        self.frozen: set[str] = set()
        self.network_created = False
        self.stats_interval = stats_interval
        self._stats: asyncio.Task | None = None
        self.timings: dict[str, float] = {}

    # --- addresses and host-side processes ------------------------------------------------------------
    def host_of(self, svc_id: str) -> str:
        """Harness-side parts (BSS, proxies, collector) listen on the gateway; each service gets its own."""
        if svc_id in HARNESS_SIDE:
            return self.gateway
        if svc_id not in self.hosts:
            if len(self.hosts) >= 250:
                raise UserError("too many services for one /24 network (at most 250)")
            self.hosts[svc_id] = f"{self.block}.{len(self.hosts) + 2}"
        return self.hosts[svc_id]

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        return self.host.env({BRIDGE_NETS_ENV: self.subnet, **extra})

    async def start_process(self, name: str, argv: list[str], extra_env: dict[str, str]) -> asyncio.subprocess.Process:
        return await self.host.start_process(name, argv, {BRIDGE_NETS_ENV: self.subnet, **extra_env})

    @property
    def procs(self) -> dict[str, asyncio.subprocess.Process]:
        return self.host.procs

    # --- life cycle ---------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Image, leftovers of crashed runs, then the run's network (so the harness can listen on it)."""
        from harness import leftovers

        t0 = time.monotonic()
        await asyncio.to_thread(leftovers.remove_docker, leftovers.docker_objects(orphans=True))
        self.image = (await asyncio.to_thread(images.build, say=lambda _m: None)).tag
        self.timings["image"] = time.monotonic() - t0
        await asyncio.to_thread(self._create_network)

    def _create_network(self) -> None:
        args = ["network", "create", "--driver", "bridge", "--internal", "--subnet", self.subnet,
                "--gateway", self.gateway, "-o", f"com.docker.network.bridge.name={self.bridge}"]
        for k, v in self.labels.items():
            args += ["--label", f"{k}={v}"]
        proc = images.docker(*args, self.network, check=False, timeout=60)
        if proc.returncode != 0:  # addresses are already handed out: no second try with another subnet
            raise UserError(f"docker network create {self.subnet} failed: {proc.stderr.strip()[-300:]}")
        self.network_created = True
        # promiscuous: the capture on the bridge also sees frames switched between two containers
        subprocess.run(["ip", "link", "set", self.bridge, "promisc", "on"], capture_output=True, check=False)

    def render(self, services: list[ServiceSpec]) -> str:
        assert self.image
        doc = compose.render(services, image=self.image, network=self.network, subnet=self.subnet,
                             gateway=self.gateway, external=True, labels=self.labels, cpus=self.cpus,
                             memory=self.memory)
        text = compose.dump(doc, f"run {self.run}: generated by harness (docker runtime); the network is the run's")
        self.compose_file.write_text(text, encoding="utf-8")
        return text

    async def up(self, services: list[ServiceSpec], timeout: float = 60.0) -> None:
        """Compose up every service, find the containers by compose labels, wait until each /health says ready."""
        if not self.network_created:
            await self.prepare()
        t0 = time.monotonic()
        self.render(services)
        await asyncio.to_thread(compose.run, self.project, str(self.compose_file), "up", "-d", "--no-build",
                                "--remove-orphans")
        self.timings["compose_up"] = time.monotonic() - t0
        found = await asyncio.to_thread(self.find)
        missing = [s.id for s in services if s.id not in found]
        if missing:
            raise RuntimeError(f"docker runtime: no container for {missing} after compose up")
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._wait_ready(session, s, timeout) for s in services))
        self.timings["ready"] = time.monotonic() - t0
        self._stats = asyncio.create_task(self._sample_loop())

    def find(self) -> dict[str, Container]:
        """The run's containers, by compose labels (project, service)."""
        ids = images.docker("ps", "-a", "-q", "--no-trunc", "--filter",
                            f"label={compose.PROJECT_LABEL}={self.project}", timeout=60).stdout.split()
        if not ids:
            return {}
        info = json.loads(images.docker("inspect", *ids, timeout=60).stdout)
        for c in info:
            service = c["Config"]["Labels"].get(compose.SERVICE_LABEL)
            pid = int(c["State"].get("Pid") or 0)
            if not service or not pid:
                continue
            known = self.containers.get(service)
            if known and known.id == c["Id"]:
                continue
            proc = None
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
            self.containers[service] = Container(service, c["Id"], pid, CgroupFiles.of(pid), host_veth(pid), proc)
        return self.containers

    async def _wait_ready(self, session: aiohttp.ClientSession, spec: ServiceSpec, timeout: float) -> None:
        pid = self.containers[spec.id].pid
        await wait_ready(session, spec, timeout, lambda: None if psutil.pid_exists(pid) else "exited",
                         lambda: self.log_tail(spec.id))

    async def _sample_loop(self) -> None:
        while True:
            for c in self.containers.values():
                c.sample()
            await asyncio.sleep(self.stats_interval)

    def log_tail(self, name: str, lines: int = 15) -> str:
        c = self.containers.get(name)
        if c is None:
            return self.host.log_tail(name, lines)
        proc = images.docker("logs", "--tail", str(lines), c.id, check=False, timeout=30)
        return (proc.stdout + proc.stderr).strip()

    def pid(self, name: str) -> int:
        """The container's init process as the host sees it: the service itself."""
        return self.containers[name].pid if name in self.containers else self.host.pid(name)

    # --- faults -------------------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """The crash: SIGKILL to the container's init (the service), as `docker kill` sends it.

        The container's counters are read first: its veth and cgroup vanish with it, and the sampler's last
        reading can be an interval old, which would leave what it sent since out of `containers.csv`.
        """
        c = self.containers[name]
        c.sample()
        if os.environ.get("MANOBENCH_DOCKER_KILL") == "docker":
            images.docker("kill", "--signal", "KILL", c.id, check=False, timeout=30)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(c.pid, signal.SIGKILL)

    def _freeze(self, name: str, frozen: bool) -> None:
        c = self.containers[name]
        f = c.cgroup.freezer
        if f is not None:
            try:
                f.write_text(("1" if frozen else "0") if c.cgroup.version == 2 else ("FROZEN" if frozen else "THAWED"))
                return
            except OSError:
                pass
        images.docker("pause" if frozen else "unpause", c.id, check=False, timeout=30)

    def pause(self, name: str) -> None:
        """The grey failure: the cgroup freezer (what `docker pause` does) on the whole container."""
        self._freeze(name, True)
        self.frozen.add(name)

    def resume(self, name: str) -> None:
        if name in self.frozen:
            self._freeze(name, False)
            self.frozen.discard(name)

    # --- teardown -----------------------------------------------------------------------------------------
    async def down(self, grace: float = 2.0) -> None:
        """Thaw, save logs and stats, compose down (SIGTERM, SIGKILL after `grace`), remove the network."""
        t0 = time.monotonic()
        for c in self.containers.values():  # first: the services keep sending until they are stopped
            c.sample()
        if self._stats:
            self._stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats
            self._stats = None
        for name in list(self.frozen):
            with contextlib.suppress(Exception):
                self.resume(name)
        await asyncio.to_thread(self._teardown, grace)
        await self.host.down(grace)
        self.timings["down"] = time.monotonic() - t0

    def _teardown(self, grace: float) -> None:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.containers:
            with (self.workdir / "containers.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=CONTAINER_COLUMNS)
                writer.writeheader()
                writer.writerows(c.row() for c in sorted(self.containers.values(), key=lambda c: c.service))
        for c in self.containers.values():
            if psutil.pid_exists(c.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(psutil.pid_exists(c.pid) for c in self.containers.values()):
            time.sleep(0.05)
        for c in self.containers.values():
            proc = images.docker("logs", c.id, check=False, timeout=30)
            (logs / f"{c.service}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
        if self.compose_file.exists():
            try:
                compose.run(self.project, str(self.compose_file), "down", "-t", "0", "--remove-orphans", timeout=120)
            except UserError:
                pass
        from harness import leftovers

        leftovers.remove_docker(leftovers.docker_objects(run=self.run))  # whatever compose left, the network
        self.network_created = False


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    try:
        return float(value) if value else None
    except ValueError:
        raise UserError(f"{name} must be a number of CPUs, got {value!r}") from None


def network_of(subnet: str) -> IPv4Network:
    net = ip_network(subnet, strict=False)
    assert isinstance(net, IPv4Network)
    return net
