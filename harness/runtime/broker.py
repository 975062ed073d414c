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

Docker runtime (`DockerBroker`): one more container of the run, `broker`, from the bus image
(harness.runtime.broker_image: the services' image plus Debian's rabbitmq-server), at its own address on the
run's network, created through the SDK from its compose entry (`compose_service`, also in the run's
compose.yml and the standalone bus files) with the run's labels, so the runtime's teardown, `harness clean`
and the next run remove it like every container. The node, epmd and data are the container's own; a crash
is the SIGKILL of its init (the whole container goes), the restart the Engine's start of the same container
(its filesystem, so its data, stays); a pause is its cgroup freezer: the runtime's own paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from harness.errors import UserError
from harness.state import state_dir, write_json_atomic
from protocol.bus import AMQP_PORT, BROKER_ID  # BROKER_ID: its one name, shared with the faults and the history

if TYPE_CHECKING:
    from harness.runtime.contract import Runtime
    from harness.runtime.docker import DockerRuntime

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # Debian's rabbitmq-server package
BROKER_DATA_ENV = "MANOBENCH_BROKER_DATA"  # a broker's data directory: removed with its leftover processes
CONFIG = "loopback_users = none\ndisk_free_limit.absolute = 1MB\n"  # guest from any address; tiny disks work


class BrokerError(UserError):
    """The broker could not start: one line with the first error of its log, and where the log is."""


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
        workdir = Path(workdir).absolute()  # the node runs in its data directory: a relative path would move
        self.run, self.workdir, self.host = run, workdir, host
        self.port = AMQP_PORT
        self.data = data_root() / f"{_token(run)}-{os.getpid()}-{os.urandom(3).hex()}"  # made by start()
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
            _record(self.data, self.run, self.base_env.get("MANOBENCH_OWNER") or str(os.getpid()))
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
        await asyncio.to_thread(leftovers.end, _of_broker(leftovers.processes(self.run), self.data), 2.0)
        _remove(self.data)


ERROR_LINE = re.compile(r"^\S+ \S+ \[error\] <[\d.]+> (?P<what>\S.*)$")  # 2026-... [error] <0.146.0> why


def first_error(logs: list[Path], width: int = 240) -> str:
    """The first Erlang error line of a node's logs (its own log, then its stdout), as one line of at most
    `width` characters: e.g. "Failed to create cookie file '...': enoent". Why not the whole log: the reason is
    its first error, and the hundreds of lines after it are the supervisors' reports of the same thing."""
    for log in logs:
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            found = ERROR_LINE.match(line.strip())
            if found:
                return _shorten(found["what"], width)
        for i, line in enumerate(lines):  # no logger yet: the boot's own report ("BOOT FAILED ... error:...")
            if line.strip() == "BOOT FAILED":
                rest = [x.strip() for x in lines[i + 1:] if x.strip() and not x.startswith("=")]
                if rest:
                    return _shorten(" ".join(rest[:2]), width)
    for log in reversed(logs):  # nothing recognised: its last words
        with contextlib.suppress(OSError):
            last = [x.strip() for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
            if last:
                return _shorten(last[-1], width)
    return "it wrote no log"


def _shorten(text: str, width: int) -> str:
    """Keep both ends of a long line: an Erlang reason often ends with its point (`eaddrinuse`)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = width * 2 // 3
    return f"{text[:head]} ... {text[-(width - head - 5):]}"


def _of_broker(procs: list[psutil.Process], data: Path | None = None) -> list[psutil.Process]:
    """The processes of a broker (of the one whose data directory is `data`): their environment names it."""
    return [p for p in procs if broker_data(p) and (data is None or broker_data(p) == str(data))]


def broker_data(proc: psutil.Process) -> str:
    """The data directory a broker process was started on, or ""."""
    try:
        return proc.environ().get(BROKER_DATA_ENV, "")
    except (psutil.Error, OSError):
        return ""


# --- the data directories, under the harness's own state root ----------------------------------------------

RECORD_SUFFIX = ".json"  # <name>.json beside <name>/: who made the directory, for which run


def data_root() -> Path:
    """Where the local brokers' data directories live: the harness's state root (0700, ours), never /tmp."""
    return state_dir("brokers")


def _token(run: str) -> str:
    """A run id as a safe file name (run ids are hex; tests name their runs freely)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", run)[:40] or "run"


def _record(data: Path, run: str, owner: str) -> None:
    """Record a data directory before it is made, so a harness killed in between leaves a record (removable),
    never an unrecorded directory."""
    write_json_atomic(data.with_name(data.name + RECORD_SUFFIX),
                      {"run": run, "owner": owner, "session": os.environ.get("MANOBENCH_SESSION", ""),
                       "made": time.time()})


def records() -> list[tuple[Path, dict[str, Any]]]:
    """(data directory, record) of every well-formed record under the root. A malformed record (not JSON, not
    an object, no run) is skipped: nothing is removed on its word."""
    root = data_root()
    found = []
    for path in sorted(root.glob(f"*{RECORD_SUFFIX}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("run"), str):
            found.append((root / path.name[:-len(RECORD_SUFFIX)], record))
    return found


def remove_data(runs: set[str]) -> list[Path]:
    """Remove the recorded data directories of these runs (their brokers were ended); returns what went.

    Only a directory recorded under the root, named by its record (never a path from anyone's environment),
    lying directly in the root once resolved and not itself a symlink; rmtree does not follow links inside."""
    gone = []
    for data, record in records():
        if record["run"] in runs and _remove(data):
            gone.append(data)
    return gone


def _remove(data: Path) -> bool:
    """Remove one of our data directories and its record; False (nothing touched) for anything else."""
    if data.name in ("", ".", "..") or data.parent.resolve() != data_root().resolve():
        return False  # one name directly in the root: nothing elsewhere, whatever the path was
    try:
        info = data.lstat()
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False  # a symlink or anything not ours: never followed, never removed
        shutil.rmtree(data, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        data.with_name(data.name + RECORD_SUFFIX).unlink()
    return True


IN_CONTAINER = {  # the broker container's environment: Debian's defaults are the container's own
    "RABBITMQ_NODENAME": "rabbit@localhost", "HOME": "/var/lib/rabbitmq", "RABBITMQ_LOGS": "-"}


def compose_service(image: str, network: str, address: str, labels: dict[str, str], healthcheck: bool = False
                    ) -> dict[str, Any]:
    """The broker's compose entry (harness.runtime.compose's keys): Debian's server script in the bus image,
    logging to stdout (the Engine keeps it: logs/broker.log of the run), AMQP on its address."""
    svc: dict[str, Any] = {
        "image": image, "command": [str(SERVER)],
        "environment": {**IN_CONTAINER, "RABBITMQ_NODE_IP_ADDRESS": address, "RABBITMQ_NODE_PORT": str(AMQP_PORT)},
        "labels": {**labels, "manobench.service": BROKER_ID, "manobench.role": BROKER_ID},
        "networks": {network: {"ipv4_address": address}}, "stop_grace_period": "2s"}
    if healthcheck:  # ready when it takes a TCP connection on its AMQP port (the harness waits for AMQP itself)
        svc["healthcheck"] = {"test": ["CMD", "python3", "-c", f"import socket; socket.create_connection("
                                       f"('{address}', {AMQP_PORT}), 2)"], "interval": "5s", "timeout": "3s",
                              "retries": 6, "start_period": "10s"}
    return svc


class DockerBroker:
    """The run's broker as one more container of the docker runtime (see the module docstring)."""

    def __init__(self, runtime: DockerRuntime, host: str) -> None:
        self.runtime, self.host, self.port = runtime, host, AMQP_PORT
        self.data = runtime.workdir / "broker-data"  # never made: the data is the container's own
        self.started_in = float("nan")
        self.container: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, timeout: float = 90.0) -> None:
        """Create and start the container (the bus image first, cached) or, after a crash, start it again."""
        from harness.runtime import broker_image, compose, engine

        t0 = time.monotonic()
        rt = self.runtime
        api = engine.client().api
        if self.container is None:
            rt.image = (await asyncio.to_thread(broker_image.build, lambda _m: None)).tag  # the services' too
            entry = compose_service(rt.image, rt.network, self.host, rt.labels)
            rt.started[BROKER_ID] = entry  # in the run's compose.yml, not started again by `up`
            args = compose.container_args({"services": {BROKER_ID: entry}}, BROKER_ID, rt.project, api.api_version)
            t0 = time.monotonic()  # the image is no part of the broker's start
            with engine.engine_call("create broker"):
                self.container = str(api.create_container(**args)["Id"])
        with engine.engine_call("start broker"):
            await asyncio.to_thread(api.start, self.container)
        rt.containers.pop(BROKER_ID, None)  # a restarted container has a new init: found again
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
        from harness.runtime import engine

        if self.container is not None:
            self.runtime.resume(BROKER_ID)
            try:
                with engine.engine_call("remove broker"):
                    await asyncio.to_thread(engine.client().api.remove_container, self.container, force=True)
            except UserError:
                pass  # already removed with the run's containers
            self.runtime.containers.pop(BROKER_ID, None)
            self.container = None


class Broker(Protocol):
    """What a testbed and the broker faults use of a run's broker, on either runtime."""

    host: str
    port: int
    data: Path
    started_in: float

    @property
    def address(self) -> str: ...
    async def start(self, timeout: float = ...) -> None: ...
    def pid(self) -> int: ...
    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    async def down(self, grace: float = ...) -> None: ...


def make_broker(runtime: object, run: str, workdir: Path, host: str, env: dict[str, str]) -> Broker:
    """The broker of a run on `runtime` (a LocalRuntime or a DockerRuntime)."""
    from harness.runtime.docker import DockerRuntime

    if isinstance(runtime, DockerRuntime):
        return DockerBroker(runtime, host)
    return LocalBroker(run, workdir, host, env)


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
