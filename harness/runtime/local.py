"""The local runtime: each service a subprocess on its own loopback address (127.a.b.x).

Readiness is the service's /health answering 200 (SLMs and modules only say so once they know every peer's
UUID), never a sleep. Processes get MANOBENCH_RUN in their environment (found again by `harness clean`),
their own session (a Ctrl-C at the terminal reaches the harness, which then tears down in order) and
PR_SET_PDEATHSIG (they die with the harness even when it is SIGKILLed).

Services are forked from a fork server that has imported their package once (harness.runtime.forkserver):
one interpreter start-up per run instead of one per service, with the same labels, sessions, logs and
PDEATHSIG. MANOBENCH_FORKSERVER=0 starts each service as its own `python -m targets` instead (how it was
measured before; the figures must not depend on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from pathlib import Path
from typing import Protocol

import aiohttp

from harness.errors import UserError
from harness.runtime import forkserver, wait_ready
from harness.runtime.broker import LocalBroker
from harness.runtime.broker_node import Broker
from harness.runtime.contract import Launch
from harness.runtime.forkserver import ForkServer
from harness.runtime.run_env import OWNER_ENV, RUN_ENV, SESSION_ENV
from protocol.spec import SPEC_ENV, ServiceSpec

SERVICES_MODULE = "targets"  # `python -m targets` runs the service its MANOBENCH_SPEC describes


class Process(Protocol):
    """What the runtime needs of a process it started: an asyncio subprocess or one the fork server forked."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


def loopback_block(rng: random.Random | None = None) -> str:
    """A random 127.a.b prefix, so concurrent or leftover runs do not collide on addresses."""
    rng = rng or random.Random()
    return f"127.{rng.randint(100, 250)}.{rng.randint(0, 255)}"


class LocalRuntime:
    name = "local"

    def __init__(self, run: str, workdir: Path, block: str | None = None) -> None:
        self.run, self.workdir = run, workdir
        self.block = block or loopback_block()
        self.collector_host = "127.0.0.1"
        self.capture_iface = "lo"
        self.hosts: dict[str, str] = {}
        self.procs: dict[str, asyncio.subprocess.Process] = {}  # harness-side helpers (the load generator)
        self.services: dict[str, Process] = {}
        self.forkserver: ForkServer | None = None
        self.launches: dict[str, Launch] = {}
        self.specs: dict[str, ServiceSpec] = {}  # a target file's instances, to start one again (`restart`)
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def broker(self, run: str, workdir: Path, host: str, env: dict[str, str]) -> Broker:
        """The run's broker: a RabbitMQ node as a local process group (harness.runtime.broker)."""
        return LocalBroker(run, workdir, host, env)

    async def prepare(self) -> None:
        """Nothing to make first: loopback addresses need no network."""

    def host_of(self, svc_id: str) -> str:
        """Each service (and the BSS, and the proxies) gets its own address in the run's block."""
        if svc_id not in self.hosts:
            if len(self.hosts) >= 250:
                raise UserError("too many services for one loopback block (at most 250)")
            self.hosts[svc_id] = f"{self.block}.{len(self.hosts) + 1}"
        return self.hosts[svc_id]

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MANOBENCH") or k == SESSION_ENV}
        return {**env, RUN_ENV: self.run, OWNER_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1", **extra}

    async def start_process(self, name: str, argv: list[str], extra_env: dict[str, str],
                            cwd: str | None = None) -> asyncio.subprocess.Process:
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=self.env(extra_env), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, cwd=cwd, preexec_fn=forkserver.die_with_parent,
            )
        except OSError as err:  # a target file's program that vanished or cannot run since it was checked
            raise UserError(f"{name}: cannot start {argv[0]}: {err.strerror}") from None
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    async def up(self, services: list[ServiceSpec], timeout: float = 30.0,
                 launches: dict[str, Launch] | None = None) -> None:
        """Start every service (forked from the fork server, or each its own interpreter; a target file's
        instance by its own command, in its folder), then wait until each one says it is ready."""
        self.launches = dict(launches or {})
        ours = [s for s in services if s.id not in self.launches]
        if ours and forkserver.enabled() and self.forkserver is None:
            self.forkserver = await ForkServer.start(SERVICES_MODULE, [f"{SERVICES_MODULE}.*"], self.env({}),
                                                     self.workdir / "logs" / "forkserver.log")
        for spec in services:
            extra = {SPEC_ENV: spec.to_json()}
            launch = self.launches.get(spec.id)
            if launch is not None:
                await self._launch(spec, launch)
            elif self.forkserver is not None:
                self.services[spec.id] = await self.forkserver.spawn(spec.id, extra,
                                                                     self.workdir / "logs" / f"{spec.id}.log")
            else:
                self.services[spec.id] = await self.start_process(spec.id, [sys.executable, "-m", SERVICES_MODULE],
                                                                  extra)
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._wait_ready(session, s, timeout) for s in services))

    async def _launch(self, spec: ServiceSpec, launch: Launch) -> None:
        """A target file's instance: its own command, in its folder, in a process group of its own."""
        assert launch.command is not None
        self.specs[spec.id] = spec
        self.services[spec.id] = await self.start_process(spec.id, launch.command,
                                                          {**launch.env, SPEC_ENV: spec.to_json()}, cwd=launch.cwd)
        self.procs.pop(spec.id)

    async def restart(self, name: str, timeout: float = 120.0) -> None:
        """Start a target file's instance again, as it was started (after a crash: the `restart` fault), and
        wait until it is ready."""
        if name not in self.launches:
            raise UserError(f"restart: {name} is not an instance of a target file (our services are not restarted)")
        old = self.services[name]
        if old.returncode is None:
            self.kill(name)
            await old.wait()
        await self._launch(self.specs[name], self.launches[name])
        async with aiohttp.ClientSession() as session:
            await self._wait_ready(session, self.specs[name], timeout)

    def _process(self, name: str) -> Process:
        return self.services[name] if name in self.services else self.procs[name]

    async def _wait_ready(self, session: aiohttp.ClientSession, spec: ServiceSpec, timeout: float) -> None:
        proc = self._process(spec.id)
        launch = self.launches.get(spec.id)
        await wait_ready(session, spec, timeout,
                         lambda: None if proc.returncode is None else f"exited with {proc.returncode}",
                         lambda: self.log_tail(spec.id), launch.health if launch else ("op", "/health"))

    def netns(self, name: str) -> tuple[int, str | None] | None:
        return None  # every local process shares the host's network namespace

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def pid(self, name: str) -> int:
        return self._process(name).pid

    def signal(self, name: str, sig: signal.Signals) -> None:
        """To the process, or to the whole process group of a target file's instance: a real orchestrator's
        component may be a master with workers (tacker-conductor), and a crash or a freeze is of all of it."""
        proc = self._process(name)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig) if name in self.launches else os.kill(proc.pid, sig)

    def kill(self, name: str) -> None:
        """SIGKILL: the crash of section III, no chance to say goodbye."""
        self.signal(name, signal.SIGKILL)

    def pause(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    async def down(self, grace: float = 2.0) -> None:
        """SIGTERM everything (continuing paused ones), SIGKILL what is still there after `grace`, reap all;
        then the fork server, which exits once its children have."""
        procs: list[Process] = [*self.services.values(), *self.procs.values()]
        groups = [p.pid for name, p in self.services.items() if name in self.launches]  # a target's instances
        for proc in procs:
            if proc.returncode is None:
                for sig in (signal.SIGCONT, signal.SIGTERM):
                    try:
                        os.killpg(proc.pid, sig) if proc.pid in groups else os.kill(proc.pid, sig)
                    except ProcessLookupError:
                        break
        if procs:
            await asyncio.wait([asyncio.create_task(p.wait()) for p in procs], timeout=grace)
            for proc in procs:
                if proc.returncode is None:
                    try:
                        os.kill(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for group in groups:  # what an instance's own processes left in its group (a master's workers)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        if self.forkserver is not None:
            await self.forkserver.close(grace)  # (its end is theirs: a child it no longer reaps died with it)
            self.forkserver = None
        await asyncio.gather(*(p.wait() for p in procs))
        self.procs.clear()
        self.services.clear()
