"""The docker runtime: one container per service instance on the run's own private bridge network.

Same interface as `LocalRuntime` (host_of, env, start_process, up, pid, kill, pause, resume, down, log_tail),
so `Testbed`, the faults and `harness run` do not care which one they drive. Every Engine call goes through
the Docker SDK (`harness.runtime.engine`: DOCKER_HOST or the docker context); no `docker` CLI is run.

- **Network**: per run a bridge network `mb<run>` (bridge device of the same name) on a free `10.a.b.0/24`,
  internal (no route out of the machine), created by `prepare()` before anything else so the harness
  side (collector, BSS, Locust's BSS, the latency proxies) can listen on its gateway `10.a.b.1`, the host's
  own address on that bridge. Every service gets a fixed address `10.a.b.N`, N >= 2, known before any
  container exists, so the planner can write every address into the specs just as for the local runtime.
- **Containers**: the compose document of the deployment (`harness.runtime.compose`) is written to the run's
  folder as `compose.yml`, the record, and each of its services is created and started through the SDK
  from that same document (`compose.container_args`), four at a time; containers are found by compose's
  labels, never by name. Everything (containers, network) carries `manobench=1`, `manobench.run`,
  `manobench.owner` (the harness pid: a dead owner makes a leftover that `harness clean` and the next
  `harness run` remove) and, under the test suite, `manobench.session`.
- **Faults**: crash = SIGKILL of the container's init process, which *is* the service (what `docker kill`
  sends), delivered directly because faults are aimed at a point of a workflow: the process is gone 3-4 ms
  after the fault is decided, against 13-50 ms through the Engine's kill, whose call returns only after
  about 95 ms (benchmarks/bench_docker.py; $MANOBENCH_DOCKER_KILL=docker sends it through the Engine);
  pause = the cgroup freezer that `docker pause` uses, written directly for the same reason (0.3 ms, the
  Engine's pause 10-20 ms, which is used where no freezer is found). Direct paths are only taken for a pid
  whose cgroup names the container.
- **Measurement**: a sampler reads, per container, CPU from cgroup accounting, peak memory, and the byte
  counters of the host-side veth (`harness.runtime.cgroups`); written to `containers.csv` beside the psutil
  figure of the same process as a cross-check.
- **Teardown**: SIGTERM to every service, the Engine's `die` events until all have exited (or the grace
  period ends), the logs, then the containers (forced: SIGKILL) and the network are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import os
import random
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal, TypedDict

import aiohttp
import psutil
from docker.types import IPAMConfig, IPAMPool

from harness.errors import UserError
from harness.runtime import compose, engine, wait_ready
from harness.runtime import image as images
from harness.runtime.broker_node import Broker
from harness.runtime.cgroups import CgroupFiles, host_veth, runs_here, veth_bytes
from harness.runtime.contract import Launch
from harness.runtime.docker_broker import DockerBroker
from harness.runtime.freezing import Freezing
from harness.runtime.local import SESSION_ENV, LocalRuntime
from protocol.spec import ServiceSpec

HARNESS_SIDE = ("bss", "proxies", "collector", "harness", "locust")
BRIDGE_NETS_ENV = "MANOBENCH_BRIDGE_NETS"  # subnets of bridges this run created: proxyd may listen there
KILL_ENV = "MANOBENCH_DOCKER_KILL"  # "docker": the crash through the Engine's kill instead of a direct SIGKILL
PARALLEL = 4  # containers created and started at once (the Engine's start is most of bring-up, and overlaps)
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


class ContainerCounters(TypedDict, total=False):
    """The last reading of a container's counters (a key is missing until it was read once)."""

    cgroup: tuple[float, float]  # (user, system) CPU seconds of the whole container
    mem: int  # peak memory, bytes
    veth: tuple[int, int]  # (rx, tx) bytes of its host-side veth
    proc: float  # CPU seconds of its init process and children, as psutil sees them (the cross-check)


@dataclass
class Container:
    service: str
    id: str
    pid: int
    cgroup: CgroupFiles
    veth: str | None
    proc: psutil.Process | None = None
    here: bool = True  # pid is this host's process of the container: direct signals, freezer and files apply
    last: ContainerCounters = field(default_factory=lambda: ContainerCounters())

    @classmethod
    def of(cls, service: str, ident: str, pid: int) -> Container:
        """What the host knows of a running container: nothing at all if its pid is not this host's."""
        if not runs_here(pid, ident):
            return cls(service, ident, pid, CgroupFiles(), None, here=False)
        proc = None
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
        return cls(service, ident, pid, CgroupFiles.of(pid), host_veth(pid), proc)

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

    def row(self) -> dict[str, object]:
        """Its line of containers.csv (CONTAINER_COLUMNS)."""
        user, sys_ = self.last.get("cgroup", (float("nan"), float("nan")))
        total, proc = user + sys_, self.last.get("proc", float("nan"))
        rx, tx = self.last.get("veth", (None, None))
        return {"service": self.service, "container": self.id[:12], "pid": self.pid, "veth": self.veth or "",
                "cgroup_user_s": round(user, 6), "cgroup_system_s": round(sys_, 6), "cgroup_total_s": round(total, 6),
                "proc_total_s": round(proc, 6), "cpu_agreement": round(proc / total, 4) if total > 0 else "",
                "mem_peak_bytes": self.last.get("mem", ""), "veth_rx_bytes": rx, "veth_tx_bytes": tx}


class DockerRuntime(Freezing):
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
        self.launches: dict[str, Launch] = {}
        # compose entries of containers started before `up` (the run's broker: harness.runtime.docker_broker):
        # in the run's compose.yml, the record, but not started again
        self.started: dict[str, compose.ComposeService] = {}
        self.compose_file = self.workdir / "compose.yml"
        self.frozen: set[str] = set()
        self.network_created = False
        self.stats_interval = stats_interval
        self._stats: asyncio.Task[None] | None = None
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
        from harness.runtime import leftovers

        t0 = time.monotonic()
        await asyncio.to_thread(leftovers.remove_docker,
                                leftovers.docker_objects(orphans=True, session=leftovers.this_session()))
        self.image = (await asyncio.to_thread(images.build, say=lambda _m: None)).tag
        self.timings["image"] = time.monotonic() - t0
        await asyncio.to_thread(self._create_network)

    def _create_network(self) -> None:
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=self.subnet, gateway=self.gateway)])
        try:  # addresses are already handed out: no second try with another subnet
            engine.client().networks.create(self.network, driver="bridge", internal=True, ipam=ipam,
                                            labels=self.labels, check_duplicate=True,
                                            options={"com.docker.network.bridge.name": self.bridge})
        except engine.DockerException as err:
            raise UserError(f"docker network create {self.subnet} failed: {engine.reason(err)}") from None
        self.network_created = True
        # promiscuous: the capture on the bridge also sees frames switched between two containers
        subprocess.run(["ip", "link", "set", self.bridge, "promisc", "on"], capture_output=True, check=False)

    def render(self, services: list[ServiceSpec]) -> compose.ComposeDocument:
        """The run's compose document, written to `compose.yml` (the record) before anything is created from it.
        The record is the same document but for each service's key (`secret`, docs/security.md): no key of the
        run is written to its folder."""
        image = self.image
        assert image

        def document(specs: list[ServiceSpec]) -> compose.ComposeDocument:
            doc = compose.render(specs, image=image, network=self.network, subnet=self.subnet,
                                 gateway=self.gateway, external=True, labels=self.labels, cpus=self.cpus,
                                 memory=self.memory)
            doc["services"].update(self.started)
            for name, launch in self.launches.items():
                svc = doc["services"][name]
                svc["image"] = launch.image
                if launch.command is not None:
                    svc["command"] = list(launch.command)
                svc["environment"].update({k: compose.escape(v) for k, v in launch.env.items()})
            return doc

        record = document([dataclasses.replace(s, secret=None) for s in services])
        text = compose.dump(record, f"run {self.run}: generated by harness (docker runtime); the network is the "
                                    "run's; each service's key (spec `secret`) is left out of this record")
        self.compose_file.write_text(text, encoding="utf-8")
        return document(services)

    async def up(self, services: list[ServiceSpec], timeout: float = 60.0,
                 launches: dict[str, Launch] | None = None) -> None:
        """Create and start every service's container from the compose document (a target file's instance
        with its own image and command), find them by compose's labels, wait until each says it is ready."""
        if not self.network_created:
            await self.prepare()
        t0 = time.monotonic()
        self.launches = dict(launches or {})
        doc = self.render(services)
        await asyncio.to_thread(self._start_all, doc)
        self.timings["start"] = time.monotonic() - t0
        found = await asyncio.to_thread(self.find)
        missing = [s.id for s in services if s.id not in found]
        if missing:  # no pid: it has exited already
            raise RuntimeError(f"{missing[0]} exited during start-up:\n{self.log_tail(missing[0])}")
        elsewhere = [c.service for c in found.values() if not c.here]
        if elsewhere:
            raise UserError(f"docker runtime: the Engine at {engine.client().api.base_url} runs the containers on "
                            f"another host ({elsewhere[0]}); a run needs the Engine's host (pids, cgroups, the "
                            "run's bridge): run the harness there")
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._wait_ready(session, s, timeout) for s in services))
        self.timings["ready"] = time.monotonic() - t0
        self._stats = asyncio.create_task(self._sample_loop())

    def _start_all(self, doc: compose.ComposeDocument) -> None:
        api = engine.client().api

        def start(service: str) -> None:
            with engine.engine_call(f"start {service}"):
                api.start(api.create_container(**compose.container_args(doc, service, self.project, api.api_version)))

        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(start, [s for s in doc["services"] if s not in self.started]))

    def find(self) -> dict[str, Container]:
        """The run's containers, by compose labels (project, service)."""
        api = engine.client().api
        with engine.engine_call("ps"):
            listed = api.containers(all=True, filters={"label": f"{compose.PROJECT_LABEL}={self.project}"})
        for entry in listed:
            service = entry["Labels"].get(compose.SERVICE_LABEL)
            known = self.containers.get(service or "")
            if not service or (known and known.id == entry["Id"]):
                continue
            with engine.engine_call(f"inspect {service}"):
                pid = int(api.inspect_container(entry["Id"])["State"].get("Pid") or 0)
            if pid:
                self.containers[service] = Container.of(service, entry["Id"], pid)
        return self.containers

    def forget(self, name: str) -> None:
        """Drop what was found of a container (restarted: it has a new init, found again by `find`)."""
        self.containers.pop(name, None)

    def broker(self, run: str, workdir: Path, host: str, env: dict[str, str]) -> Broker:
        """The run's broker: one more container of the run (harness.runtime.docker_broker)."""
        return DockerBroker(self, host)

    async def _wait_ready(self, session: aiohttp.ClientSession, spec: ServiceSpec, timeout: float) -> None:
        pid = self.containers[spec.id].pid
        launch = self.launches.get(spec.id)
        await wait_ready(session, spec, timeout, lambda: None if psutil.pid_exists(pid) else "exited",
                         lambda: self.log_tail(spec.id), launch.health if launch else ("op", "/health"))

    async def _sample_loop(self) -> None:
        while True:
            for c in self.containers.values():
                c.sample()
            await asyncio.sleep(self.stats_interval)

    def netns(self, name: str) -> tuple[int, str | None] | None:
        c = self.containers.get(name)
        return (c.pid, c.veth) if c else None

    def log_tail(self, name: str, lines: int | Literal["all"] = 15) -> str:
        """The last `lines` of a container's stdout and stderr ("all": the whole log), from the Engine."""
        c = self.containers.get(name)
        if c is None and name not in self.hosts:  # a harness-side process
            return self.host.log_tail(name, 10**9 if lines == "all" else lines)
        try:
            ref = c.id if c else compose.container_name(self.project, name)  # exited before found: by name
            return engine.client().api.logs(ref, tail=lines).decode("utf-8", "replace").strip()
        except engine.DockerException as err:
            return f"(no log of {name}: {engine.reason(err)})"

    def pid(self, name: str) -> int:
        """The container's init process as the host sees it: the service itself."""
        return self.containers[name].pid if name in self.containers else self.host.pid(name)

    # --- faults -------------------------------------------------------------------------------------------
    async def restart(self, name: str, timeout: float = 120.0) -> None:
        """Not on this runtime yet: the `restart` fault is refused before anything starts (faults.instances)."""
        raise UserError("restart: a target file's instances are started again on the local runtime only, for now")

    def kill(self, name: str) -> None:
        """The crash: SIGKILL to the container's init (the service), as `docker kill` sends it.

        The container's counters are read first: its veth and cgroup vanish with it, and the sampler's last
        reading can be an interval old, which would leave what it sent since out of `containers.csv`.
        """
        c = self.containers[name]
        c.sample()
        if os.environ.get(KILL_ENV) == "docker":
            with contextlib.suppress(engine.DockerException):  # already gone: the crash has happened
                engine.client().api.kill(c.id, signal="SIGKILL")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(c.pid, signal.SIGKILL)

    def _freeze(self, name: str, frozen: bool) -> None:
        c = self.containers[name]
        f = c.cgroup.freezer
        if f is not None:
            try:
                f.write_text(c.cgroup.frozen if frozen else c.cgroup.thawed)
                return
            except OSError:
                pass
        with engine.engine_call("pause" if frozen else "unpause"):
            (engine.client().api.pause if frozen else engine.client().api.unpause)(c.id)

    # --- teardown -----------------------------------------------------------------------------------------
    async def down(self, grace: float = 2.0) -> None:
        """Thaw, save stats, SIGTERM and wait for the exits (`grace`), save logs, remove containers and network."""
        t0 = time.monotonic()
        for c in self.containers.values():  # first: the services keep sending until they are stopped
            c.sample()
        await self._stop_sampling_and_thaw()
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
        since = time.time()
        running = {c.id for c in self.containers.values() if psutil.pid_exists(c.pid)}
        for c in self.containers.values():
            if c.id in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGTERM)
        self._await_exit(running, since, grace)
        for c in self.containers.values():
            (logs / f"{c.service}.log").write_text(self.log_tail(c.service, "all") + "\n", encoding="utf-8")
        from harness.runtime import leftovers

        leftovers.remove_docker(leftovers.docker_objects(run=self.run))  # containers (forced), then the network
        self.network_created = False

    def _await_exit(self, ids: set[str], since: float, grace: float) -> None:
        """Until the Engine has seen every container in `ids` die (its `die` events since `since`), at most
        `grace` seconds: one event stream instead of polling each container."""
        if not ids:
            return
        pending = set(ids)
        with contextlib.suppress(engine.DockerException):
            events = engine.client().events(since=int(since) - 1, until=int(time.time() + grace) + 1, decode=True,
                                            filters={"type": "container", "event": "die",
                                                     "label": f"manobench.run={self.run}"})
            try:
                for event in events:
                    pending.discard(event.get("id", ""))
                    if not pending:
                        break
            finally:
                events.close()


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    try:
        return float(value) if value else None
    except ValueError:
        raise UserError(f"{name} must be a number of CPUs, got {value!r}") from None

