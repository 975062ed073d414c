"""The run's own RabbitMQ broker (`transport: amqp`), started, awaited, broken and ended like a service.

Local runtime: Debian's `rabbitmq-server` (3.10) as a process of its own session, bound to the run's own
loopback address. Everything that could collide with another run, the test suite or a broker the machine
already runs is the run's own: the node name (`manobench-<run>@localhost`), the data directory
(RABBITMQ_MNESIA_BASE, also its HOME for the Erlang cookie: under the harness's state root, see below), the
log directory (`<run folder>/logs/broker`), the AMQP port (5672 on the run's broker address), the Erlang distribution
port and epmd's port (ERL_EPMD_PORT; free ports picked at start). The server script is run directly, not
through Debian's `/usr/sbin` wrapper (which `su`s to the rabbitmq user and would need the run folder to be
its own): the node runs as whoever runs the harness. Every path it is given is absolute: the node runs
in its data directory and RabbitMQ's scripts resolve a relative path against that again, so a relative run
folder (the default `results/...`) once made the node fail on its cookie file.

It is ready when it accepts an AMQP connection (about 4 s on this machine, `benchmarks/bench_transport.py`).
The node carries MANOBENCH_RUN / MANOBENCH_OWNER like every process of the run, and so does the `epmd
-daemon` it leaves behind (a daemon of its own session, found by its environment): `down` ends both and
removes the data directory. The data directory is made under the harness's own state root
(`state_dir("brokers")`, 0700) and recorded there when made (`<name>.json` beside `<name>/`); after a
SIGKILLed harness, `harness clean` and the next run end the labelled processes and then remove the recorded
directories of the runs they ended (`remove_data`), only under that root and never through a symlink. A
path read from a process's environment (BROKER_DATA_ENV) only tells which processes are one broker's; it is
never deleted: any local process can carry any environment. A broker that cannot start is one line with
the first error of its log (`BrokerError`, exit 2), with its processes and data already gone.

Docker runtime: `harness.runtime.docker_broker.DockerBroker`, one more container of the run. Which broker a
run gets is the runtime's to say (`Runtime.broker`), never probed here; the node's description shared by
both (server, configuration, readiness, `Broker`) is `harness.runtime.broker_node`, the data directories
`harness.runtime.broker_data`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from harness.runtime import broker_data
from harness.runtime.broker_node import (
    BROKER_DATA_ENV,
    CONFIG,
    SERVER,
    Broker,
    BrokerError,
    accepts_amqp,
    first_error,
    free_port,
)
from protocol.bus import AMQP_PORT, BROKER_ID  # BROKER_ID: its one name, shared with the faults and the history

if TYPE_CHECKING:
    from harness.runtime.contract import Runtime


class LocalBroker:
    """One RabbitMQ node of one run, a local process group."""

    def __init__(self, run: str, workdir: Path, host: str, env: dict[str, str]) -> None:
        workdir = Path(workdir).absolute()  # the node runs in its data directory: a relative path would move
        self.run, self.workdir, self.host = run, workdir, host
        self.port = AMQP_PORT
        self.data = broker_data.new_data(run)  # made by start()
        self.logs = workdir / "logs" / "broker"
        self.node = f"manobench-{run}@localhost"
        self.dist_port, self.epmd_port = free_port(), free_port()
        self.base_env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.started_in = float("nan")  # wall seconds from exec to the first AMQP connection

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.logs / f"{self.node}.log"

    def env(self) -> dict[str, str]:
        return {**self.base_env, "HOME": str(self.data), BROKER_DATA_ENV: str(self.data),
                "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": self.host,
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_MNESIA_BASE": str(self.data), "RABBITMQ_LOG_BASE": str(self.logs),
                "RABBITMQ_CONFIG_FILE": str(self.data / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.data / "enabled_plugins"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}

    async def start(self, timeout: float = 60.0) -> None:
        """Start the node (again, on the same data, after a crash) and return once it accepts AMQP."""
        if not SERVER.exists():
            raise BrokerError(f"transport amqp needs Debian's rabbitmq-server ({SERVER} is missing): "
                              "run scripts/setup.sh")
        if not self.data.is_dir():
            broker_data.record(self.data, self.run, self.base_env.get("MANOBENCH_OWNER") or str(os.getpid()))
            self.data.mkdir(mode=0o700)
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.data / "rabbitmq.conf").write_text(CONFIG, encoding="utf-8")
        (self.data / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        out = (self.logs / "stdout.log").open("ab")
        t0 = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            str(SERVER), env=self.env(), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, cwd=str(self.data))
        out.close()
        while not await accepts_amqp(self.host, self.port):
            if self.proc.returncode is not None or time.monotonic() - t0 > timeout:
                why = "exited" if self.proc.returncode is not None else f"not ready after {timeout:g} s"
                await self.down()
                log = self.log if self.log.exists() else self.logs / "stdout.log"
                raise BrokerError(f"broker {why}: {first_error([self.log, self.logs / 'stdout.log'])} (log: {log})")
            await asyncio.sleep(0.1)
        self.started_in = time.monotonic() - t0

    def pid(self) -> int:
        """The Erlang VM's pid (CPU accounting), else the server script's."""
        assert self.proc is not None
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return self.proc.pid
        beams = [c.pid for c in children if c.name().startswith("beam")]
        return beams[0] if beams else self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        """To the node's whole process group (the server script and the Erlang VM)."""
        if self.proc is not None:  # the group outlives its leader when the script died before the VM
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL, the crash: the data directory stays, for a restart on it."""
        self.signal(signal.SIGKILL)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    async def down(self, grace: float = 5.0) -> None:
        """End the node (SIGCONT, SIGTERM, SIGKILL after `grace`), its epmd, and remove its data."""
        from harness.runtime import leftovers

        if self.proc is not None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await self.proc.wait()
            self.signal(signal.SIGKILL)  # whatever of its group outlived the script
        # epmd (a daemon of its own session) and anything of the node that outlived its script
        await asyncio.to_thread(leftovers.end, broker_data.of_broker(leftovers.processes(self.run), self.data), 2.0)
        broker_data.remove(self.data)


def make_broker(runtime: Runtime, run: str, workdir: Path, host: str, env: dict[str, str]) -> Broker:
    """The broker of a run on `runtime`: the one the runtime declares (`Runtime.broker`)."""
    return runtime.broker(run, workdir, host, env)


class BrokerControl:
    """The runtime's process control (faults' ProcessControl) with the run's broker as one more process."""

    def __init__(self, runtime: Runtime, broker: Broker | None) -> None:  # (faults.base.ProcessControl)
        self.runtime, self.broker = runtime, broker

    def kill(self, name: str) -> None:
        self.broker.kill() if name == BROKER_ID and self.broker else self.runtime.kill(name)

    def pause(self, name: str) -> None:
        self.broker.pause() if name == BROKER_ID and self.broker else self.runtime.pause(name)

    def resume(self, name: str) -> None:
        self.broker.resume() if name == BROKER_ID and self.broker else self.runtime.resume(name)

    async def restart(self, name: str) -> None:
        await self.runtime.restart(name)
