"""The swarm runtime: a design on Docker Swarm, one service per instance, on an overlay network of the run's.

Driven through the Docker SDK on whatever Engine the client points at (DOCKER_HOST or the docker context),
which must be a swarm manager on the harness's own host (the harness's side joins the overlay there).

- **Network**: per run an attachable, internal overlay network `mb<run>` on a free `10.a.b.0/24` (no way out
  of the cluster). The harness side (collector, BSS, Locust, proxies, the capture) joins it through the
  *gateway*: a standalone container attached to the overlay at `10.a.b.254`, into whose network namespace the
  harness's event-loop thread moves for the run (harness.runtime.netns). The gateway runs with the host's pid
  namespace and ends itself once the harness is gone.
- **Services**: one swarm service per instance, `mb<run>_<instance>` with the stack label
  `com.docker.stack.namespace=mb<run>` (so `docker stack ps mb<run>` lists them), replicas 1, restart
  condition none (the harness decides what restarts), endpoint mode dnsrr (no virtual IP: this kernel has no
  IPVS, measured, and a VIP would hide which task a connection reached). A swarm service cannot be given an
  address, so each is created when the planner first asks for its address (`host_of`): the orchestrator
  assigns the task's address within milliseconds, before the task runs, and the task waits for its spec
  (`swarm_agent launch`: fetched from the harness on the gateway, then `exec python3 -m targets`).
- **Placement**: the harness picks each instance's node (harness.runtime.swarm_nodes: replicated pairs on
  different nodes when there are enough) and pins it with a `node.id` constraint; config.yaml's `swarm`
  section records the plan, the node each task really ran on, and the clock offsets.
- **Faults, counters, clocks**: a container on this host (its pid's cgroup names it) is crashed by a direct
  SIGKILL of its init and frozen by its cgroup freezer, as on the docker runtime; its CPU (cgroup) and bytes
  (its eth0, read in its own namespace: the overlay's veth peers are not in the host's) are sampled here. On
  any other node the fault agent (a global service, `swarm_agent agent`, with the node's Engine socket
  mounted) kills, pauses and counts through that node's Engine. Each node's clock offset is measured through
  its agent (harness.runtime.clocks) after bring-up and before teardown.
- **Clean-up**: services, agent, gateway and network carry the run's labels (`manobench.run`, `.owner`,
  `.session`); teardown removes them, and `harness clean` / the next run remove those of a dead owner. Every
  service also ends itself once the collector has been gone for $MANOBENCH_ORPHAN_GRACE seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import json
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import psutil
import yaml
from aiohttp import web
from docker.types import (
    DriverConfig,
    EndpointSpec,
    IPAMConfig,
    IPAMPool,
    Mount,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from harness.errors import UserError
from harness.runtime import clocks, engine, swarm_agent, swarm_nodes, wait_ready
from harness.runtime import image as images
from harness.runtime.broker_node import Broker
from harness.runtime.cgroups import CgroupFiles, runs_here
from harness.runtime.contract import Launch
from harness.runtime.docker import BRIDGE_NETS_ENV, HARNESS_SIDE, free_block, labels
from harness.runtime.freezing import Freezing
from harness.runtime.local import LocalRuntime
from harness.runtime.netns import NetnsSwitch
from harness.runtime.swarm_nodes import Placement, nodes, require_manager, task_address, task_of
from harness.runtime.swarm_tasks import Task
from protocol import auth
from protocol.spec import ServiceSpec

AGENT_SOURCE = Path(swarm_agent.__file__).read_text(encoding="utf-8")
AGENT_KEY_NAME = "agent"  # protocol.auth.key(secret, this): the fault agents' key, no service's
SPEC_PORT = 7991
STACK_LABEL = "com.docker.stack.namespace"
GRACE_ENV = "MANOBENCH_ORPHAN_GRACE"
ORPHAN_GRACE = 10.0  # seconds without the collector before a swarm service ends itself (hosts may be far apart)
CONTAINER_COLUMNS = ["service", "node", "container", "pid", "measured", "cgroup_total_s", "mem_peak_bytes",
                     "eth_rx_bytes", "eth_tx_bytes"]


class SwarmRuntime(Freezing):
    name = "swarm"

    def __init__(self, run: str, workdir: Path, *, block: str | None = None, cpus: float | None = None,
                 memory: str | None = None, stats_interval: float = 0.5) -> None:
        self.run, self.workdir = run, Path(workdir)
        self.stack = f"mb{run}"
        self.network = f"mb{run}"
        self.block = block or free_block()
        self.subnet = f"{self.block}.0/24"
        self.gateway = f"{self.block}.254"
        self.collector_host = self.gateway
        self.capture_iface = "eth0"  # the gateway's end of the overlay: every proxied link passes it
        self.cpus, self.memory = cpus, memory
        self.labels = {**labels(run), STACK_LABEL: self.stack}
        self.host = LocalRuntime(run, self.workdir, block="127.0.0")  # Locust and co.: in the gateway's namespace
        self.grace = float(os.environ.get(GRACE_ENV) or ORPHAN_GRACE)
        self.hosts: dict[str, str] = {}
        self.service_ids: dict[str, str] = {}
        self.specs: dict[str, str] = {}
        self.tasks: dict[str, Task] = {}
        self.frozen: set[str] = set()
        self.agents: dict[str, str] = {}  # node id -> the agent's address on the overlay
        self.clocks: dict[str, list[clocks.OffsetRecord]] = {"start": [], "end": []}
        # every kill/pause/unpause an agent made on another node: when the harness asked, and when the node's
        # Engine was called, on the harness's clock (config.yaml's swarm.agent_actions)
        self.agent_actions: list[clocks.AgentAction] = []
        self.timings: dict[str, float] = {}
        self.image: str | None = None
        self.network_id: str | None = None
        self.placement: Placement | None = None
        self.local_node = ""  # the swarm node id of the Engine the harness talks to: its host is the harness's
        self.switch = NetnsSwitch()
        self._spec_site: web.AppRunner | None = None
        self._stats: asyncio.Task[None] | None = None
        self.use_secret(auth.new_secret())  # the testbed hands over the run's own before anything is created
        self.refusals = {"agent": 0, "spec_server": 0}  # requests the agents and the spec server refused
        self.encryption = ("off", "not probed yet")  # the overlay's: ("on" | "off", why)

    def use_secret(self, secret: str) -> None:
        """The run's secret (protocol.auth): the agents get their key, each task its own (for its spec)."""
        self.secret = secret
        self.agent_key = auth.key(secret, AGENT_KEY_NAME)

    def refused(self) -> dict[str, int]:
        """Requests refused for want of the run's key: by the fault agents (read before they go) and by the
        spec server (docs/security.md)."""
        return dict(self.refusals)

    # --- addresses and host-side processes ------------------------------------------------------------
    def host_of(self, svc_id: str) -> str:
        """The harness side is the gateway; a service's address is its task's, so its service is created now."""
        if svc_id in HARNESS_SIDE:
            return self.gateway
        if svc_id not in self.hosts:
            self.hosts[svc_id] = self._create_service(svc_id)
        return self.hosts[svc_id]

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        return self.host.env({BRIDGE_NETS_ENV: self.subnet, **extra})

    async def start_process(self, name: str, argv: list[str], extra_env: dict[str, str]) -> asyncio.subprocess.Process:
        return await self.host.start_process(name, argv, {BRIDGE_NETS_ENV: self.subnet, **extra_env})

    def broker(self, run: str, workdir: Path, host: str, env: dict[str, str]) -> Broker:
        """None on a swarm: transport amqp is refused before anything starts (harness.plan.config)."""
        raise UserError("transport: amqp is not wired for the swarm runtime (docs/swarm.md): use transport http")

    # --- life cycle ---------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Swarm, leftovers, image, nodes, the run's overlay and the gateway; then the harness joins the overlay."""
        from harness.runtime import leftovers

        if self.network_id:
            return
        t0 = time.monotonic()
        await asyncio.to_thread(require_manager)
        await asyncio.to_thread(leftovers.remove_docker,
                                leftovers.docker_objects(orphans=True, session=leftovers.this_session()))
        self.image = (await asyncio.to_thread(images.build, say=lambda _m: None)).tag
        self.placement = Placement(await asyncio.to_thread(nodes))
        self.local_node = str((await asyncio.to_thread(engine.client().info)).get("Swarm", {}).get("NodeID", ""))
        self.timings["image"] = time.monotonic() - t0
        pid = await asyncio.to_thread(self._create_network_and_gateway)
        self.switch.enter(pid)  # this thread: the event loop's
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(8))  # threads born on the overlay
        await self._serve_specs()
        await asyncio.to_thread(self._create_agent)  # starts on every node while the deployment is planned
        self.timings["prepare"] = time.monotonic() - t0

    def _create_network_and_gateway(self) -> int:
        """The overlay (encrypted where this kernel can: `overlay_encryption`), then the gateway: the harness's
        namespace on it. The gateway watches the harness through the spec server's socket in that namespace,
        so it needs no host pid namespace (it had pid_mode=host, to read the harness's /proc entry)."""
        client = engine.client()
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=self.subnet, gateway=f"{self.block}.1")])
        self.encryption = swarm_nodes.overlay_encryption()
        options = {"encrypted": ""} if self.encryption[0] == "on" else None
        with engine.engine_call(f"network create {self.network} (overlay {self.subnet})"):
            net = client.api.create_network(self.network, driver="overlay", attachable=True, internal=True,
                                            ipam=ipam, labels=self.labels, check_duplicate=True, options=options)
        self.network_id = net["Id"]
        api = client.api
        watched = f"{self.gateway}:{SPEC_PORT}"
        with engine.engine_call("gateway container"):
            container = api.create_container(
                self.image, ["python3", "-c", AGENT_SOURCE, "gateway", watched, str(self.grace)],
                name=f"{self.stack}-gateway", labels={**self.labels, "manobench.service": "gateway"},
                host_config=api.create_host_config(network_mode=self.network, auto_remove=False),
                networking_config={"EndpointsConfig": {
                    self.network: api.create_endpoint_config(ipv4_address=self.gateway)}})
            api.start(container["Id"])
            pid = int(api.inspect_container(container["Id"])["State"].get("Pid") or 0)
        if not runs_here(pid, container["Id"]):
            raise UserError(f"swarm runtime: the Engine at {api.base_url} is not this host's; the harness must run on "
                            "a manager node and talk to its own Engine (the harness joins the overlay there)")
        return pid

    async def _serve_specs(self) -> None:
        """Each task's spec, to that task only: it carries the service's key, so the request must too."""

        async def spec(request: web.Request) -> web.Response:
            svc = request.match_info["svc"]
            if not auth.matches(auth.key(self.secret, svc), request.headers.get(auth.HEADER)):
                self.refusals["spec_server"] += 1
                return web.Response(status=403)
            text = self.specs.get(svc)
            return web.Response(text=text) if text else web.Response(status=404)

        app = web.Application()
        app.add_routes([web.get("/spec/{svc}", spec)])
        self._spec_site = web.AppRunner(app, access_log=None)
        await self._spec_site.setup()
        await web.TCPSite(self._spec_site, self.gateway, SPEC_PORT).start()

    def _create_service(self, svc_id: str) -> str:
        """The instance's service (replicas 1, restart none, pinned to its node); returns its task's address."""
        assert self.image and self.placement and self.network_id, "prepare() first"
        node = self.placement.node_for(svc_id)
        resources = Resources(cpu_limit=round(self.cpus * 1e9) if self.cpus else None,
                              mem_limit=_bytes(self.memory) if self.memory else None)
        url = f"http://{self.gateway}:{SPEC_PORT}/spec/{svc_id}"
        with engine.engine_call(f"service create {svc_id}"):
            service = engine.client().api.create_service(
                _task_template(self.image, ["python3", "-c", AGENT_SOURCE, "launch", url],
                               {**self.labels, "manobench.service": svc_id},
                               {GRACE_ENV: f"{self.grace:g}", auth.SECRET_ENV: auth.key(self.secret, svc_id)},
                               self.network, svc_id, [f"node.id=={node.id}"], resources),
                name=f"{self.stack}_{svc_id}", labels={**self.labels, "manobench.service": svc_id},
                mode=ServiceMode("replicated", 1), endpoint_spec=EndpointSpec(mode="dnsrr"))
        self.service_ids[svc_id] = service["ID"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            task = task_of(service["ID"])
            addr = task_address(task, self.network_id) if task else None
            if addr:
                return addr
            time.sleep(0.005)
        raise UserError(f"swarm: no address for {svc_id}'s task after 30 s (is node {node.hostname} down?)")

    async def up(self, services: list[ServiceSpec], timeout: float = 180.0,
                 launches: dict[str, Launch] | None = None) -> None:
        """Hand every task its spec, wait until each /health says ready, find the tasks and the agents. The wait
        is long: a node prepares its tasks' containers one after another (a vfs node copies the image for each)."""
        if launches:
            raise UserError("swarm: target files run on the local and docker runtimes (not swarm yet)")
        t0 = time.monotonic()
        for spec in services:
            self.host_of(spec.id)
            self.specs[spec.id] = spec.to_json()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(wait_ready(session, s, timeout, _never, functools.partial(self.log_tail, s.id))
                                   for s in services))
        self.timings["ready"] = time.monotonic() - t0
        await asyncio.to_thread(self._find_tasks)
        await self._await_agents(timeout)
        self.clocks["start"] = await asyncio.to_thread(self.measure_clocks)
        self.record()
        self._stats = asyncio.create_task(self._sample_loop())

    def _create_agent(self) -> None:
        """The fault agent on every node. It watches the harness through the spec server (the harness's own
        listener on the gateway, up before the collector) and ends itself once that has been gone for the grace."""
        assert self.image
        watched = f"{self.gateway}:{SPEC_PORT}"
        mount = Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind", read_only=True)
        with engine.engine_call("service create agent"):
            service = engine.client().api.create_service(
                _task_template(self.image, ["python3", "-c", AGENT_SOURCE, "agent", watched, f"{self.grace:g}",
                                            self.run],
                               {**self.labels, "manobench.service": "agent"}, {auth.SECRET_ENV: self.agent_key},
                               self.network, "agent",
                               [], None, mounts=[mount], cap_add=["NET_ADMIN"]),
                name=f"{self.stack}_agent", labels={**self.labels, "manobench.service": "agent"},
                mode=ServiceMode("global"), endpoint_spec=EndpointSpec(mode="dnsrr"))
        self.service_ids["agent"] = service["ID"]

    async def _await_agents(self, timeout: float) -> None:
        """Every placed node's agent address, once its task runs and answers /clock."""
        assert self.placement and self.network_id
        deadline = time.monotonic() + timeout
        wanted = {n.id for n in self.placement.nodes}
        while time.monotonic() < deadline:
            tasks = await asyncio.to_thread(engine.client().api.tasks, {"service": self.service_ids["agent"]})
            for task in tasks:
                addr = task_address(task, self.network_id)
                if addr and task.get("Status", {}).get("State") == "running":
                    self.agents[task["NodeID"]] = addr
            if wanted <= set(self.agents):
                ok = await asyncio.gather(*(self._answers(a) for a in self.agents.values()))
                if all(ok):
                    return
            await asyncio.sleep(0.1)
        missing = [n.hostname for n in self.placement.nodes if n.id not in self.agents]
        raise UserError(f"swarm: the fault agent did not start on {', '.join(missing) or 'every node'} within "
                        f"{timeout:g} s (is image {self.image} on every node? `harness swarm check`)")

    async def _answers(self, addr: str) -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://{addr}:{swarm_agent.AGENT_PORT}/clock",
                                                           timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def _find_tasks(self) -> None:
        assert self.placement
        by_id = {n.id: n for n in self.placement.nodes}
        for svc, sid in self.service_ids.items():
            if svc == "agent":
                continue
            task = task_of(sid)
            status = (task or {}).get("Status", {}).get("ContainerStatus", {})
            cid, pid = status.get("ContainerID", ""), int(status.get("PID") or 0)
            node = by_id.get((task or {}).get("NodeID", ""), self.placement.node_for(svc))
            here = node.id == self.local_node and runs_here(pid, cid)  # another node's pids are not ours to signal
            self.tasks[svc] = Task(svc, node, cid, pid, here, CgroupFiles.of(pid) if here else CgroupFiles())

    def measure_clocks(self) -> list[clocks.OffsetRecord]:
        assert self.placement
        names = {n.id: n.hostname for n in self.placement.nodes}
        out = []
        for node_id, addr in sorted(self.agents.items()):
            with contextlib.suppress(OSError, ValueError, KeyError):
                out.append(clocks.measure(names.get(node_id, node_id), addr, swarm_agent.AGENT_PORT).as_dict())
        return out

    def record(self) -> dict[str, object]:
        """The run's swarm facts, in config.yaml's `swarm` section (and swarm.json when there is no config.yaml)."""
        assert self.placement
        facts: dict[str, object] = {
            "stack": self.stack, "network": self.network, "subnet": self.subnet, "gateway": self.gateway,
            "nodes": [{"id": n.id[:12], "hostname": n.hostname, "addr": n.addr, "role": n.role, "labels": n.labels}
                      for n in self.placement.nodes],
            "placement": {svc: {"planned": self.placement.node_for(svc).hostname,
                                "ran_on": t.node.hostname if (t := self.tasks.get(svc)) else None}
                          for svc in sorted(self.hosts)},
            "pairs_separated": self.placement.separated(), "clock_offsets": self.clocks,
            "agent_actions": self.agent_actions,
            "orphan_grace": self.grace,
            "overlay_encrypted": self.encryption[0] == "on", "overlay_encryption": self.encryption[1],
        }
        path = self.workdir / "config.yaml"
        if path.exists():
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            doc["swarm"] = facts
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        else:
            (self.workdir / "swarm.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")
        return facts

    async def _sample_loop(self) -> None:
        while True:
            for t in self.tasks.values():
                t.sample()
            await asyncio.sleep(0.5)

    def pid(self, name: str) -> int:
        """The host pid of a task on this host; 0 for one on another node (counted there, by its agent)."""
        if name in self.tasks:
            return self.tasks[name].pid if self.tasks[name].here else 0
        return self.host.pid(name)

    def netns(self, name: str) -> tuple[int, str | None] | None:
        return None  # links go through the proxy on the gateway (tc per node: docs/swarm.md)

    def log_tail(self, name: str, lines: int | str = 15) -> str:
        sid = self.service_ids.get(name)
        if sid is None:
            return self.host.log_tail(name, 10**9 if lines == "all" else int(lines))
        try:
            raw = engine.client().api.service_logs(sid, stdout=True, stderr=True, tail=str(lines))
            data = raw if isinstance(raw, bytes) else b"".join(raw)
            return data.decode("utf-8", "replace").strip()
        except engine.DockerException as err:
            return f"(no log of {name}: {engine.reason(err)})"

    # --- faults -------------------------------------------------------------------------------------------
    def _agent(self, task: Task, action: str) -> None:
        """The action through the task's node's agent, recorded with the node's own moment of it: a kill through
        an agent lands after the call's round trip (20-104 ms measured), not when the fault event says."""
        url = f"http://{self.agents[task.node.id]}:{swarm_agent.AGENT_PORT}/{action}?container={task.container}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        asked = time.monotonic()
        request = urllib.request.Request(url, method="POST", headers={auth.HEADER: self.agent_key})
        with opener.open(request, timeout=5) as resp:
            reply: clocks.AgentReply = json.loads(resp.read() or b"{}")
        done = clocks.agent_action(action, task.service, task.node.hostname, asked, time.monotonic(), reply,
                                   self.clocks["start"])
        self.agent_actions.append(done)

    def _shift_history(self) -> None:
        """Put the events of services on other nodes on the harness's clock: `t` minus the node's offset
        (interpolated between start and end), the node's own kept as `t_node`. events.jsonl is rewritten in
        place, on the event loop's thread, so the collector (appending to it, on this thread) cannot interleave;
        nothing is done on one node (one clock)."""
        if self.placement is None:
            return
        names = {n.id: n.hostname for n in self.placement.nodes}
        start = {o["node"]: o for o in self.clocks["start"]}
        end = {o["node"]: o for o in self.clocks["end"]}
        remote = {svc: names.get(t.node.id, "") for svc, t in self.tasks.items() if t.node.id != self.local_node}
        path = self.workdir / "events.jsonl"
        if not remote or not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                out.append(line)
                continue
            node = remote.get(event.get("svc", ""))
            if node in start and "t" in event:
                event["t_node"] = event["t"]
                event["t"] = clocks.on_harness_clock(event["t"], start[node], end.get(node))
                line = json.dumps(event, separators=(",", ":"))
            out.append(line)
        with path.open("r+", encoding="utf-8") as fh:
            fh.seek(0)
            fh.write("".join(f"{line}\n" for line in out))
            fh.truncate()

    def _agent_refusals(self) -> None:
        """What every agent refused (its /clock says, which needs no key), before the agents go."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        total = 0
        for addr in self.agents.values():
            with contextlib.suppress(OSError, ValueError), \
                    opener.open(f"http://{addr}:{swarm_agent.AGENT_PORT}/clock", timeout=5) as resp:
                total += int(json.loads(resp.read()).get("refused", 0))
        self.refusals["agent"] = total

    def _remote_stats(self) -> None:
        """The last counters of every task on another node, from its agent (the node's Engine stats)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for t in self.tasks.values():
            if t.here or t.node.id not in self.agents:
                continue
            url = f"http://{self.agents[t.node.id]}:{swarm_agent.AGENT_PORT}/stats?container={t.container}"
            request = urllib.request.Request(url, headers={auth.HEADER: self.agent_key})
            with contextlib.suppress(OSError, ValueError), opener.open(request, timeout=10) as resp:
                stats = json.loads(resp.read())
                if stats.get("cpu_s") is not None:
                    t.last["cpu"] = float(stats["cpu_s"])
                t.last["eth"] = (stats.get("rx_bytes"), stats.get("tx_bytes"))
                if stats.get("mem_peak_bytes"):
                    t.last["mem"] = stats["mem_peak_bytes"]

    async def restart(self, name: str, timeout: float = 120.0) -> None:  # refused before a run (faults.instances)
        raise UserError("restart: a target file's instances are started again on the local runtime only, for now")

    def kill(self, name: str) -> None:
        """SIGKILL of the task's init (the service): directly on this host, else through its node's agent."""
        t = self.tasks[name]
        if not t.here:
            self._agent(t, "kill")
            return
        t.sample()
        with contextlib.suppress(ProcessLookupError):
            os.kill(t.pid, signal.SIGKILL)

    def _freeze(self, name: str, frozen: bool) -> None:
        t = self.tasks[name]
        f = t.cgroup.freezer
        if t.here and f is not None:
            f.write_text(t.cgroup.frozen if frozen else t.cgroup.thawed)
        else:
            self._agent(t, "pause" if frozen else "unpause")

    # --- teardown -----------------------------------------------------------------------------------------
    async def down(self, grace: float = 2.0) -> None:
        """Clocks again, last counters, SIGTERM and the exits, logs; then services, agent, gateway, network."""
        t0 = time.monotonic()
        for t in self.tasks.values():
            t.sample()
        await self._stop_sampling_and_thaw()
        if self.agents and self.placement:
            await asyncio.to_thread(self._remote_stats)
            self.clocks["end"] = await asyncio.to_thread(self.measure_clocks)
            await asyncio.to_thread(self._agent_refusals)
            self.record()
        self._shift_history()
        try:
            await asyncio.to_thread(self._stop_tasks, grace)
        finally:
            if self._spec_site is not None:
                await self._spec_site.cleanup()
                self._spec_site = None
            await self.host.down(grace)
            if self.switch.inside:
                self.switch.leave()
                asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(8))

            await asyncio.to_thread(self._remove_all)
            self.network_id = None
        self.timings["down"] = time.monotonic() - t0

    def _remove_all(self, limit: float = 20.0) -> None:
        """Services, agent, gateway and network, until the Engine lists none of them (a swarm network's removal
        is accepted before the listing forgets it)."""
        from harness.runtime import leftovers

        deadline = time.monotonic() + limit
        while (left := leftovers.docker_objects(run=self.run)) and time.monotonic() < deadline:
            leftovers.remove_docker(left)
            time.sleep(0.1)

    def _stop_tasks(self, grace: float) -> None:
        if self.tasks:
            with (self.workdir / "containers.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=CONTAINER_COLUMNS)
                writer.writeheader()
                writer.writerows(t.row() for t in sorted(self.tasks.values(), key=lambda t: t.service))
        running = [t for t in self.tasks.values() if t.here and psutil.pid_exists(t.pid)]
        for t in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(t.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(psutil.pid_exists(t.pid) for t in running):
            time.sleep(0.05)
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for svc in self.tasks:
            (logs / f"{svc}.log").write_text(self.log_tail(svc, "all") + "\n", encoding="utf-8")


def _never() -> str | None:
    """A task's exit shows as a health time-out with its log (the Engine's task state is not polled)."""
    return None


def _task_template(image: str, command: list[str], container_labels: dict[str, str], env: dict[str, str | bytes | None],
                   network: str, alias: str, constraints: list[str], resources: Resources | None,
                   mounts: list[Mount] | None = None, cap_add: list[str] | None = None) -> TaskTemplate:
    from docker.types import ContainerSpec
    from docker.types import Placement as SwarmPlacement

    spec = ContainerSpec(image, command=command, labels=container_labels, env=env, mounts=mounts or [],
                         stop_grace_period=2 * 10**9, cap_add=cap_add)
    return TaskTemplate(spec, restart_policy=RestartPolicy(condition="none"), resources=resources,
                        placement=SwarmPlacement(constraints=constraints),
                        networks=[NetworkAttachmentConfig(network, aliases=[alias])],
                        log_driver=DriverConfig("json-file"))


def _bytes(text: str) -> int:
    units = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    text = text.lower()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
