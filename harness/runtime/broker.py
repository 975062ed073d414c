"""The run's own RabbitMQ broker (`transport: amqp`), started, awaited, broken and ended like a service.

Local runtime: Debian's `rabbitmq-server` (3.10) as a process of its own session, bound to the run's own
loopback address. Everything that could collide with another run, the test suite or a broker the machine
already runs is the run's own: the node name (`manobench-<run>@localhost`), the data directory
(RABBITMQ_MNESIA_BASE, also its HOME for the Erlang cookie, `<run folder>/broker-data`), the log directory
(`<run folder>/logs/broker`), the AMQP port (5672 on the run's broker address), the Erlang distribution
port and epmd's port (ERL_EPMD_PORT; free ports picked at start). The server script is run directly, not
through Debian's `/usr/sbin` wrapper (which `su`s to the rabbitmq user and would need the run folder to be
its own): the node runs as whoever runs the harness.

It is ready when it accepts an AMQP connection (about 4 s on this machine, `benchmarks/bench_transport.py`).
The node carries MANOBENCH_RUN / MANOBENCH_OWNER like every process of the run, and so does the `epmd
-daemon` it leaves behind (a daemon of its own session, found by its environment): `down` ends both and
removes the data directory; after a SIGKILLed harness, `harness clean` and the next run find them by their
labels and remove the data directory named in their environment (BROKER_DATA_ENV). A broker that cannot
start is one line naming its log (`BrokerError`, exit 2), with its processes and data already gone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil

from harness.errors import UserError
from protocol.bus import AMQP_PORT

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # Debian's rabbitmq-server package
BROKER_DATA_ENV = "MANOBENCH_BROKER_DATA"  # a broker's data directory: removed with its leftover processes
BROKER_ID = "broker"  # its name among the run's hosts, links and processes
CONFIG = "loopback_users = none\ndisk_free_limit.absolute = 1MB\n"  # guest from any address; tiny disks work


class BrokerError(UserError):
    """The broker could not start: one line naming its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def accepts_amqp(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the broker completes an AMQP connection (not merely a TCP accept: the listener opens early)."""
    import aio_pika

    try:  # a plain TCP connect first: aio-pika logs every refused attempt
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
    except (OSError, TimeoutError):
        return False
    try:
        connection = await asyncio.wait_for(aio_pika.connect(host=host, port=port), timeout)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, asyncio.CancelledError, RuntimeError):
        return False
    await connection.close()
    return True


class LocalBroker:
    """One RabbitMQ node of one run, a local process group."""

    def __init__(self, run: str, workdir: Path, host: str, env: dict[str, str]) -> None:
        self.run, self.workdir, self.host = run, workdir, host
        self.port = AMQP_PORT
        self.data = workdir / "broker-data"
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
        self.data.mkdir(parents=True, exist_ok=True)
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
                raise BrokerError(f"broker {why}: see {self.log if self.log.exists() else self.logs / 'stdout.log'}")
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
        await asyncio.to_thread(leftovers.end, _of_broker(leftovers.processes(self.run), self.data), 2.0)
        shutil.rmtree(self.data, ignore_errors=True)


def _of_broker(procs: list[psutil.Process], data: Path | None = None) -> list[psutil.Process]:
    """The processes of a broker (of the one whose data directory is `data`): their environment names it."""
    return [p for p in procs if broker_data(p) and (data is None or broker_data(p) == str(data))]


def broker_data(proc: psutil.Process) -> str:
    """The data directory a broker process was started on, or ""."""
    try:
        return proc.environ().get(BROKER_DATA_ENV, "")
    except (psutil.Error, OSError):
        return ""


def remove_data(dirs: set[str]) -> None:
    """After leftover processes were ended: remove the data directories of the brokers among them."""
    for path in dirs:
        if path:
            shutil.rmtree(path, ignore_errors=True)


def make_broker(runtime_name: str, run: str, workdir: Path, host: str, env: dict[str, str]) -> LocalBroker:
    """The broker of a run on `runtime_name`."""
    if runtime_name != "local":
        raise UserError(f"transport amqp: no broker for the {runtime_name} runtime yet (use --runtime local)")
    return LocalBroker(run, workdir, host, env)
