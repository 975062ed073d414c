"""The run's broker on the docker runtime (`transport: amqp`): one more container of the run, `broker`.

From the bus image (harness.runtime.broker_image: the services' image plus Debian's rabbitmq-server), at its
own address on the run's network, created through the SDK from its compose entry (`compose.broker_service`,
also in the run's compose.yml and the standalone bus files) with the run's labels, so the runtime's
teardown, `harness clean` and the next run remove it like every container. The node, epmd and data are the
container's own; a crash is the SIGKILL of its init (the whole container goes), the restart the Engine's
start of the same container (its filesystem, so its data, stays); a pause is its cgroup freezer: the
runtime's own paths.

It reaches the runtime through `BrokerHost`, what it uses of a `DockerRuntime`, so that the runtime can
make its broker (`DockerRuntime.broker`) without the two modules importing each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import psutil

from harness.errors import UserError
from harness.runtime import broker_image, compose, engine
from harness.runtime.broker_node import BrokerError, accepts_amqp
from protocol.bus import AMQP_PORT, BROKER_ID


class Pid(Protocol):
    """A found container, as far as the broker needs it: its init's host pid."""

    @property
    def pid(self) -> int: ...


class BrokerHost(Protocol):
    """What the broker container uses of the docker runtime that runs it."""

    workdir: Path
    network: str
    project: str
    labels: dict[str, str]
    image: str | None
    started: dict[str, compose.ComposeService]  # compose entries of containers started before `up`

    def find(self) -> Mapping[str, Pid]: ...
    def forget(self, name: str) -> None: ...
    def log_tail(self, name: str, lines: int | Literal["all"] = 15) -> str: ...
    def pid(self, name: str) -> int: ...
    def kill(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...


class DockerBroker:
    """The run's broker as one more container of the docker runtime (see the module docstring)."""

    def __init__(self, runtime: BrokerHost, host: str) -> None:
        self.runtime, self.host, self.port = runtime, host, AMQP_PORT
        self.data = runtime.workdir / "broker-data"  # never made: the data is the container's own
        self.started_in = float("nan")
        self.container: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, timeout: float = 90.0) -> None:
        """Create and start the container (the bus image first, cached) or, after a crash, start it again."""
        t0 = time.monotonic()
        rt = self.runtime
        api = engine.client().api
        if self.container is None:
            rt.image = (await asyncio.to_thread(broker_image.build, lambda _m: None)).tag  # the services' too
            entry = compose.broker_service(rt.image, rt.network, self.host, rt.labels)
            rt.started[BROKER_ID] = entry  # in the run's compose.yml, not started again by `up`
            args = compose.container_args({"services": {BROKER_ID: entry}}, BROKER_ID, rt.project, api.api_version)
            t0 = time.monotonic()  # the image is no part of the broker's start
            with engine.engine_call("create broker"):
                self.container = str(api.create_container(**args)["Id"])
        with engine.engine_call("start broker"):
            await asyncio.to_thread(api.start, self.container)
        rt.forget(BROKER_ID)  # a restarted container has a new init: found again
        found = await asyncio.to_thread(rt.find)
        while not await accepts_amqp(self.host, self.port):
            gone = BROKER_ID not in found or not psutil.pid_exists(found[BROKER_ID].pid)
            if gone or time.monotonic() - t0 > timeout:
                log = rt.workdir / "logs" / "broker.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(rt.log_tail(BROKER_ID, "all") + "\n", encoding="utf-8")
                await self.down()
                why = "exited" if gone else f"not ready after {timeout:g} s"
                raise BrokerError(f"broker container {why}: see {log}")
            await asyncio.sleep(0.1)
        self.started_in = time.monotonic() - t0

    def pid(self) -> int:
        return self.runtime.pid(BROKER_ID)

    def kill(self) -> None:
        self.runtime.kill(BROKER_ID)

    def pause(self) -> None:
        self.runtime.pause(BROKER_ID)

    def resume(self) -> None:
        self.runtime.resume(BROKER_ID)

    async def down(self, grace: float = 5.0) -> None:
        """The runtime's teardown removes the container with the run's others; this is for a start that failed."""
        if self.container is not None:
            self.runtime.resume(BROKER_ID)
            try:
                with engine.engine_call("remove broker"):
                    await asyncio.to_thread(engine.client().api.remove_container, self.container, force=True)
            except UserError:
                pass  # already removed with the run's containers
            self.runtime.forget(BROKER_ID)
            self.container = None
