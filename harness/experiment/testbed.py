"""A live deployment of one design: collector, BSS, services, and their guaranteed teardown.

`async with Testbed(z, workdir) as tb:` brings everything up and, on any exit (normal, error, Ctrl-C,
cancellation), takes every process down again. Tests, benchmarks and `harness run` all go through here, so
there is one way to start and one way to stop.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from harness.errors import UserError
from harness.history import Collector
from harness.links.contract import LinkBackend
from harness.links.netem_wiring import NetemWiring, configured_leaf
from harness.links.wiring import ProxyWiring
from harness.load.bss import Bss
from harness.plan.config import LINK_BACKENDS, Experiment
from harness.plan.deploy import BROKER, Deployment, Route, direct, plan, uses_broker
from harness.plan.deploy_target import plan_target
from harness.plan.target import TargetFile
from harness.runtime.broker import Broker, make_broker
from harness.runtime.contract import Launch, Runtime
from harness.runtime.local import LocalRuntime
from protocol import auth

EXTERNAL_BSS_PORT = 8100
WORKDIR_ENV = "MANOBENCH_WORKDIR"  # a target file's instances: the run's folder for their state


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def make_runtime(z: Experiment, run: str, workdir: Path) -> Runtime:
    """The runtime z asks for: local processes, one container per service (harness.runtime.docker), or one swarm
    service per instance (harness.runtime.swarm)."""
    if z.runtime == "docker":
        from harness.runtime.docker import DockerRuntime

        return DockerRuntime(run, workdir, cpus=z.container_cpus, memory=z.container_memory)
    if z.runtime == "swarm":
        from harness.runtime.swarm import SwarmRuntime

        return SwarmRuntime(run, workdir, cpus=z.container_cpus, memory=z.container_memory)
    return LocalRuntime(run, workdir)


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, z: Experiment, workdir: Path, run: str | None = None, external_bss: bool = False,
                 links_backend: str | None = None, target: TargetFile | None = None) -> None:
        """`links_backend`: what carries each link's latency: "proxy" (every link through the latency proxy),
        "netem" (tc inside each container's namespace: docker runtime only; installed once the containers
        are up, before any load) or None (direct, no latency). `external_bss`: the load generator (Locust)
        hosts the BSS at `bss_address` instead of the harness's asyncio BSS. `target`: deploy that target
        file's orchestrator (harness.plan.target) instead of z's design."""
        self.z, self.workdir, self.target = z, Path(workdir), target
        if target is not None:
            target.check_runtime(z.runtime)
        self.run = run or new_run_id()
        backend = links_backend
        if backend is not None and backend not in LINK_BACKENDS[1:]:  # "auto" is resolved before a testbed
            raise UserError(f"links backend must be proxy or netem (or none), got {backend!r}")
        if backend == "netem" and z.runtime != "docker":
            raise UserError("link_backend: netem needs a network namespace per service: use --runtime docker, "
                            "or link_backend proxy")
        self.links_backend = backend
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the run's secret (docs/security.md): in this process, and in helpers' environments; each service gets
        # only its own key, in its spec. Never on a command line, never in the run folder.
        self.secret = auth.new_secret()
        self.collector = Collector(self.workdir / "events.jsonl", secret=self.secret)
        self.runtime = make_runtime(z, self.run, self.workdir)
        if hasattr(self.runtime, "use_secret"):  # swarm: the agents' key and each task's, as services are made
            self.runtime.use_secret(self.secret)
        self.external_bss = external_bss
        self.bss = Bss(self.collector, host=self.runtime.host_of("bss"), secret=self.secret)
        # instrument name -> its count of refused requests, for instruments that live elsewhere (Locust's BSS)
        self.refusal_sources: dict[str, Callable[[], int]] = {}
        self.wiring: LinkBackend | None = None
        if backend == "proxy":
            self.wiring = ProxyWiring(self.runtime.host_of("proxies"), z.time_scale, self.workdir,
                                      secret=auth.key(self.secret, auth.CONTROL))
        elif backend == "netem":
            self.wiring = NetemWiring.for_runtime(self.runtime, z.time_scale, configured_leaf()[1])
        self.route: Route = self.wiring.route if self.wiring else direct
        self.deployment: Deployment | None = None
        self.scratch: Path | None = None  # a target's instances' shared folder (MANOBENCH_WORKDIR)
        self.broker: Broker | None = None  # transport amqp: the run's RabbitMQ
        self.on_prepared: list[Callable[[], object]] = []  # called once the runtime's network exists
        # called as teardown starts, right before the runtime's last reading of its counters: a measurement
        # stopped here and those counters cover the same span (services still run and send until down)
        self.on_teardown: list[Callable[[], object]] = []

    @property
    def bss_address(self) -> str:
        return f"{self.runtime.host_of('bss')}:{EXTERNAL_BSS_PORT}" if self.external_bss else self.bss.address

    async def __aenter__(self) -> Testbed:
        try:
            await self.runtime.prepare()  # docker: image, network (the harness listens on its gateway)
            for hook in self.on_prepared:
                hook()
            collector = await self.collector.start(self.runtime.collector_host)
            if not self.external_bss:
                await self.bss.start()
            if self.target is not None:
                self.deployment = plan_target(self.target, self.z, self.run, self.runtime.host_of, self.bss_address,
                                              collector, self.route)
            else:
                self.deployment = plan(self.z, self.run, self.runtime.host_of, self.bss_address, collector, self.route)
            for spec in self.deployment.services:
                spec.secret = auth.key(self.secret, spec.id)
            self.bss.entry = self.deployment.entry
            self.bss.entry_bytes = self.deployment.entry_bytes
            if self.wiring:
                self.wiring.before_up(self.runtime)
            if uses_broker(self.z) and self.target is None:  # before the services, which connect to it as they start
                self.broker = make_broker(self.runtime, self.run, self.workdir, self.runtime.host_of(BROKER),
                                          self.runtime.env({}))
                await self.broker.start()
                self.collector.emit("harness", "broker_ready", address=self.broker.address,
                                    started_in=self.broker.started_in)
            self.collector.emit("harness", "deploy", design=self.design, run=self.run,
                                services=[s.id for s in self.deployment.services])
            if self.target is not None:
                # a folder of the run's own, shared by its instances, for their state (a database's files):
                # outside the run folder (which may sit in a 0700 tree an instance's own user cannot enter),
                # removed at teardown
                self.scratch = Path(tempfile.mkdtemp(prefix=f"manobench-{self.run}-"))
                self.scratch.chmod(0o755)
            launches = await self._launches()
            if self.target is None:
                await self.runtime.up(self.deployment.services)
            else:
                await self.runtime.up(self.deployment.services, timeout=self.target.ready_timeout, launches=launches)
            if self.wiring:
                shaped = await asyncio.to_thread(self.wiring.after_up)
                if shaped:
                    self.collector.emit("harness", "links_shaped", **shaped)
            self.collector.emit("harness", "ready")
        except BaseException:
            await self.close()
            raise
        return self

    @property
    def design(self) -> str:
        """What runs: one of our designs, or `target:NAME`."""
        return self.z.design if self.target is None else f"target:{self.target.name}"

    async def _launches(self) -> dict[str, Launch] | None:
        """How to start each instance of a target file (None: our reference services); the images it says how
        to build are built first (docker)."""
        target = self.target
        if target is None:
            return None
        if self.z.runtime == "docker":
            from harness.runtime import image

            builds = {tag: (target.base / b.context, b.dockerfile) for tag, b in target.images.items()}
            needed = sorted({i.image for i in target.instances if i.image})
            await asyncio.to_thread(image.build_declared, builds, needed, lambda _m: None)
        health = (target.ready.plane, target.ready.path) if target.ready else None
        launches = {}
        for inst in target.instances:
            command = inst.command
            if self.z.runtime == "local" and command is not None:
                command = [target.program(inst) or command[0], *command[1:]]
            launches[inst.id] = Launch(command=command, image=inst.image, cwd=str(target.base),
                                       env={WORKDIR_ENV: str(self.scratch), **inst.env}, health=health)
        return launches

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        hooks, self.on_teardown = self.on_teardown, []
        for hook in hooks:
            hook()
        if self.wiring is not None:  # proxyd's count, while its control address still exists (docker: the bridge)
            getattr(self.wiring, "refused", dict)()
        await self.runtime.down()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self.broker is not None:
            await self.broker.down()
        if self.wiring:
            self.wiring.stop()
        self.collector.emit("harness", "down")
        await self.bss.close()
        await self.collector.close()

    def refused(self) -> dict[str, int]:
        """Requests each instrument refused for want of the run's secret (docs/security.md): `collector`
        (connections without the right hello, and forged events), `bss` (completion notices; Locust's BSS
        once it has written its summary), `proxyd` (its control API; read at teardown), `services` (/hb-now and
        /release, as each service reported when it stopped) and, on a swarm, `agent`. Any of them non-zero
        means something on the run's network tried what only the run may do."""
        counts = {"collector": self.collector.refused, "bss": self.bss.refused}
        for name, source in self.refusal_sources.items():
            counts[name] = counts.get(name, 0) + source()
        if self.wiring is not None:
            counts.update(getattr(self.wiring, "refused", dict)())
        counts["services"] = sum(int(e.get("refused", 0)) for e in self.collector.events
                                 if e["kind"] == "stopping" and isinstance(e.get("refused", 0), int))
        counts.update(getattr(self.runtime, "refused", dict)())
        return counts

    def kill(self, svc_id: str) -> None:
        """SIGKILL a service, recording the moment in the history first."""
        self.collector.emit("harness", "fault", action="kill", target=svc_id)
        self.runtime.kill(svc_id)
