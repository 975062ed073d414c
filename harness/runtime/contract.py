"""The runtime contract: what `Testbed`, the faults, the measurement and `harness run` may ask of a runtime
(local processes, one container per service, later a Swarm or Kubernetes). Anything else a runtime offers
is its own business; nobody probes for it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.runtime.broker_node import Broker
from protocol.spec import ServiceSpec


@dataclass(frozen=True)
class Launch:
    """How to start an instance that is not one of our reference services: a target file's
    (harness.plan.target). Without one, a runtime starts `targets` with the spec, as always."""

    command: list[str] | None = None  # local: argv (its program resolved); docker: the container's command
    image: str | None = None  # docker: the image, made or found before anything starts
    cwd: str | None = None  # local: where the command runs (the target file's folder)
    env: dict[str, str] = field(default_factory=dict)
    health: tuple[str, str] | None = ("op", "/health")  # (plane, path) that answers 200 once ready; None:
    # ready when every port accepts a TCP connection


class Runtime(Protocol):
    """Start, address, break and tear down the services of one run."""

    name: str  # as in z.runtime
    block: str  # the run's /24 as "a.b.c": every address of the run is a.b.c.N
    collector_host: str  # where the harness's collector listens so that every service can reach it
    capture_iface: str  # the interface the wire capture watches: where the run's packets pass

    async def prepare(self) -> None:
        """What must exist before the harness side listens (an image, a network); may do nothing."""

    def broker(self, run: str, workdir: Path, host: str, env: dict[str, str]) -> Broker:
        """The run's broker (`transport: amqp`) as this runtime runs it, at `host`; not started yet. Declared
        by the runtime, so nobody probes which runtime it is to choose one."""

    def host_of(self, svc_id: str) -> str:
        """The address `svc_id` (a service, or "bss", "proxies", ...) binds to; fixed before it exists."""

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        """The environment of a process the run starts: labelled with the run and its owner."""

    async def start_process(self, name: str, argv: list[str], extra_env: dict[str, str]
                            ) -> asyncio.subprocess.Process:
        """A harness-side helper (the load generator) as a process labelled like the run's services."""

    async def up(self, services: list[ServiceSpec], timeout: float = 30.0,
                 launches: dict[str, Launch] | None = None) -> None:
        """Start every service (those in `launches` as told there) and return once each is ready."""

    def pid(self, name: str) -> int:
        """The host pid of a service's main process (CPU accounting, namespaces)."""

    def kill(self, name: str) -> None:
        """The crash: SIGKILL, delivered at once (faults are aimed at a point of a workflow)."""

    def pause(self, name: str) -> None:
        """The grey failure: freeze every process of the service."""

    async def restart(self, name: str, timeout: float = 120.0) -> None:
        """Start a target file's instance again as it was started, after a crash; ready when it returns."""

    def resume(self, name: str) -> None:
        """Thaw what `pause` froze."""

    async def down(self, grace: float = 2.0) -> None:
        """Take everything of the run down (SIGTERM, then SIGKILL after `grace`); safe to call twice."""

    def netns(self, name: str) -> tuple[int, str | None] | None:
        """(a pid inside it, the host end of its veth) of a service with a network namespace of its own, where
        tc can shape what it sends and receives (the netem link backend); None for one on the host's (every
        local process, and the harness side: BSS, proxies)."""

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines a service printed, for error messages."""
