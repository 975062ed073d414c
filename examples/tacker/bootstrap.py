"""OpenStack Tacker as a manobench target: the run's own processes, their files, their readiness, their end.

Every component is one foreground command (`run.py <component> ...`, see run.py) that prepares its files and
then *execs* the real program, so the process a runtime started is the program itself (its PID is the one a
crash or a pause fault strikes):

| component | what runs (after exec) | listens on (plane) | prepares |
|---|---|---|---|
| mariadb | mariadbd as user mysql | db | datadir (mariadb-install-db, first time), init SQL (database + user) |
| rabbitmq | the Erlang VM of a RabbitMQ node | amqp (+ its dist and epmd ports) | data/log dirs, cookie, config |
| vim | the VIM stub (vimstub.py) | vim | - |
| server | tacker-server | api | tacker.conf, api-paste.ini, state dirs; the schema (`upgrade head`, once) |
| conductor | tacker-conductor | - (an RPC consumer) | its tacker.conf; waits for the schema |

The server and the conductors wait for what they need (the database, the broker, the schema) before they
exec, so the order in which a runtime starts them does not matter; readiness is `run.py ready <component>`
(exit 0 when ready) or the functions below.

Everything lives under one run folder (`--dir`): mariadb/, rabbitmq/, tacker/{etc,state}/, logs/. Nothing
outside it is written (the Erlang cookie too: HOME is the node's folder). Processes are labelled with
MANOBENCH_RUN and MANOBENCH_OWNER (as manobench's `harness clean` expects) and MANOBENCH_TACKER_DIR (the run
folder), which is how `sweep` finds what a node left behind (epmd).

`Stack` (below) is the library form used by smoke.py: it starts each component with the very command a
target file would run, waits for it, and stops them all (SIGTERM, SIGKILL after a short grace: Tacker's
services otherwise take a minute to exit) on exit, error and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV = Path(os.environ.get("MANOBENCH_TACKER_VENV", REPO / ".venv-tacker"))
RUN_ENV, OWNER_ENV, DIR_ENV, SPEC_ENV = "MANOBENCH_RUN", "MANOBENCH_OWNER", "MANOBENCH_TACKER_DIR", "MANOBENCH_SPEC"
RABBIT_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
DB_NAME, DB_USER, DB_PASSWORD = "tacker", "tacker", "tacker"
CONDUCTOR_TOPIC = "TACKER_CONDUCTOR_V2"  # the v2 LCM RPC topic (tacker.sol_refactored.conductor.conductor_rpc_v2)
SCHEMA_DONE = "schema.done"  # under tacker/: written once `upgrade head` succeeded
LOG_LEVELS = ",".join([
    "amqp=WARN", "amqplib=WARN", "sqlalchemy=WARN", "oslo.messaging=INFO", "oslo_messaging=INFO", "iso8601=WARN",
    "requests.packages.urllib3.connectionpool=WARN", "urllib3.connectionpool=WARN", "urllib3.util.retry=WARN",
    "keystonemiddleware=WARN", "routes.middleware=WARN", "stevedore=WARN", "taskflow=WARN", "keystoneauth=WARN",
    "oslo.cache=INFO", "oslo_policy=INFO", "dogpile.core.dogpile=INFO", "glance_store=WARN", "tooz=WARN",
    "tacker.common.log=DEBUG"])


class BootstrapError(RuntimeError):
    """A component could not be prepared or did not become ready: one line, with where its log is."""


# --- the run folder ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def of(cls, root: str | os.PathLike[str]) -> Paths:
        return cls(Path(root).absolute())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def mariadb(self) -> Path:
        return self.root / "mariadb"

    @property
    def datadir(self) -> Path:
        return self.mariadb / "data"

    @property
    def db_socket(self) -> Path:
        return self.mariadb / "mysqld.sock"

    @property
    def rabbitmq(self) -> Path:
        return self.root / "rabbitmq"

    @property
    def tacker(self) -> Path:
        return self.root / "tacker"

    @property
    def etc(self) -> Path:
        return self.tacker / "etc"

    @property
    def state(self) -> Path:
        return self.tacker / "state"

    def conf(self, instance: str) -> Path:
        return self.etc / f"{instance}.conf"

    def log(self, instance: str) -> Path:
        return self.logs / f"{instance}.log"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def labels(run: str, owner: int | str, root: Path) -> dict[str, str]:
    return {RUN_ENV: run, OWNER_ENV: str(owner), DIR_ENV: str(root)}


def venv_python() -> str:
    py = VENV / "bin" / "python"
    if not py.exists():
        raise BootstrapError(f"Tacker's venv {VENV} is missing: run examples/tacker/setup.sh")
    return str(py)


def in_tacker_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


# --- MariaDB -------------------------------------------------------------------------------------------------


def _traversable_by_others(root: Path) -> None:
    """mariadbd runs as `mysql`: every folder above its own must let others through. The run folder itself
    (often a 0700 mkdtemp) is opened for traversal (o+x, nothing listed or readable); an ancestor that is not
    is an error, never changed."""
    root = root.absolute()
    mode = root.stat().st_mode
    if not mode & 0o001:
        os.chmod(root, mode | 0o001)
    for parent in root.parents:
        if not parent.stat().st_mode & 0o001:
            raise BootstrapError(f"{parent} is not traversable by other users: mariadbd (user mysql) cannot "
                                 f"reach {root}; choose a run folder elsewhere")


def mariadb_argv(paths: Paths, host: str, port: int, buffer_pool: str = "16M") -> list[str]:
    """Prepare the private MariaDB node (datadir the first time, the init SQL) and return mariadbd's argv."""
    mysqld = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
    if not Path(mysqld).exists():
        raise BootstrapError("mariadbd is missing: run examples/tacker/setup.sh (Debian's mariadb-server)")
    if len(str(paths.db_socket)) > 100:
        raise BootstrapError(f"the socket path {paths.db_socket} is too long for a unix socket: a shorter --dir")
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.mariadb.mkdir(parents=True, exist_ok=True)
    _traversable_by_others(paths.root)
    user = "mysql"
    try:
        pw = pwd.getpwnam(user)
    except KeyError as e:
        raise BootstrapError("no user mysql: install Debian's mariadb-server (examples/tacker/setup.sh)") from e
    if os.geteuid() == 0:
        os.chown(paths.mariadb, pw.pw_uid, pw.pw_gid)
    if not (paths.datadir / "mysql").is_dir():
        t0 = time.monotonic()
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if install is None:
            raise BootstrapError("mariadb-install-db is missing: run examples/tacker/setup.sh")
        log = paths.log("mariadb-install")
        with log.open("ab") as out:
            rc = subprocess.call([install, "--no-defaults", f"--datadir={paths.datadir}", f"--user={user}",
                                  "--auth-root-authentication-method=normal", "--skip-test-db",
                                  "--skip-name-resolve", f"--innodb-buffer-pool-size={buffer_pool}"],
                                 stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        if rc != 0:
            raise BootstrapError(f"mariadb-install-db failed (exit {rc}): see {log}")
        print(f"mariadb: datadir made in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    init = paths.mariadb / "init.sql"
    init.write_text(
        f"CREATE DATABASE IF NOT EXISTS {DB_NAME} CHARACTER SET utf8mb4;\n"
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}';\n"
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';\n"
        f"GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'%';\n"
        f"GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'localhost';\n", encoding="utf-8")
    os.chmod(init, 0o644)
    return [mysqld, "--no-defaults", f"--datadir={paths.datadir}", f"--port={port}", f"--bind-address={host}",
            f"--socket={paths.db_socket}", f"--pid-file={paths.mariadb / 'mysqld.pid'}", f"--user={user}",
            f"--log-error={paths.mariadb / 'error.log'}", "--skip-name-resolve", f"--init-file={init}",
            f"--innodb-buffer-pool-size={buffer_pool}", "--innodb-log-file-size=16M", "--performance-schema=OFF",
            "--max-connections=300", "--skip-log-bin", "--character-set-server=utf8mb4"]


def mariadb_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """The server's handshake packet arrived (protocol 10): it is past its init file and takes connections."""
    try:
        with socket.create_connection((host, port), timeout) as s:
            s.settimeout(timeout)
            head = s.recv(5)
            return len(head) == 5 and head[4] == 10
    except OSError:
        return False


# --- RabbitMQ ------------------------------------------------------------------------------------------------


def rabbitmq_node(run: str) -> str:
    return f"manobench-tacker-{re.sub(r'[^A-Za-z0-9_-]', '_', run)[:40] or 'run'}@localhost"


def rabbitmq_argv_env(paths: Paths, run: str, host: str, port: int, dist_port: int, epmd_port: int
                      ) -> tuple[list[str], dict[str, str]]:
    """Prepare the private RabbitMQ node and return its argv and environment. RUNNING_UNDER_SYSTEMD makes
    Debian's server script exec the Erlang VM (no shell parent): the process started is the broker."""
    if not RABBIT_SERVER.exists():
        raise BootstrapError(f"{RABBIT_SERVER} is missing: run examples/tacker/setup.sh (Debian's rabbitmq-server)")
    data = paths.rabbitmq
    logs = paths.logs / "rabbitmq"
    for d in (data, logs):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    (data / "rabbitmq.conf").write_text("loopback_users = none\ndisk_free_limit.absolute = 1MB\n"
                                        "vm_memory_high_watermark.relative = 0.9\n", encoding="utf-8")
    (data / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    env = {"HOME": str(data), "RABBITMQ_NODENAME": rabbitmq_node(run), "RABBITMQ_NODE_IP_ADDRESS": host,
           "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_DIST_PORT": str(dist_port),
           "ERL_EPMD_PORT": str(epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
           "RABBITMQ_MNESIA_BASE": str(data / "mnesia"), "RABBITMQ_LOG_BASE": str(logs),
           "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq.conf"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
           "RABBITMQ_PID_FILE": str(data / "rabbitmq.pid"),
           "RUNNING_UNDER_SYSTEMD": "true",
           "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
    return [str(RABBIT_SERVER)], env


def amqp_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """The node answers the AMQP 0-9-1 protocol header with connection.start (a method frame on channel 0):
    not merely a TCP accept, which its listener does before the broker is up."""
    try:
        with socket.create_connection((host, port), timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            head = s.recv(11)
            return len(head) >= 11 and head[0] == 1 and struct.unpack(">HH", head[7:11]) == (10, 10)
    except OSError:
        return False


def conductor_consumers(amqp: str, host_name: str, timeout: float = 3.0) -> int:
    """How many consumers the conductor `host_name`'s own RPC queue has (1 once it listens), through kombu
    (Tacker's venv); 0 when the queue is not there yet."""
    import kombu  # Tacker's venv: oslo.messaging's driver

    try:
        with kombu.Connection(f"amqp://guest:guest@{amqp}//", connect_timeout=timeout) as conn:
            channel = conn.channel()
            try:
                _, _, consumers = channel.queue_declare(f"{CONDUCTOR_TOPIC}.{host_name}", passive=True)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
            return int(consumers)
    except Exception:  # not found (404 closes the channel), refused, timed out: not ready
        return 0


# --- Tacker's files ------------------------------------------------------------------------------------------


def api_paste(paths: Paths) -> Path:
    """api-paste.ini of the installed Tacker, with `keystonecontext` added to every noauth pipeline (without
    it the package API fails with KeyError 'tacker.context'). Derived at run time, never stored here."""
    src = VENV / "etc" / "tacker" / "api-paste.ini"
    if not src.exists():
        raise BootstrapError(f"{src} is missing: run examples/tacker/setup.sh")
    out = []
    for line in src.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(noauth\s*=\s*)(.*)$", line)
        if m and "keystonecontext" not in m[2]:
            words = m[2].split()
            at = words.index("catch_errors") + 1 if "catch_errors" in words else 0
            words.insert(at, "keystonecontext")
            line = m[1] + " ".join(words)
        out.append(line)
    paths.etc.mkdir(parents=True, exist_ok=True)
    dst = paths.etc / "api-paste.ini"
    _write_atomic(dst, "\n".join(out) + "\n")
    return dst


@dataclass
class TackerConf:
    """What one Tacker process's tacker.conf says. `api` is the address clients reach tacker-server at."""

    instance: str  # the instance id (the conductor's RPC host name)
    db: str  # host:port of MariaDB
    amqp: str  # host:port of RabbitMQ
    api: str  # host:port of tacker-server, as its links name it (also where the server binds)
    bind: str | None = None  # the server's bind host (default: api's host)
    debug: bool = False
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # section -> option -> value

    def render(self, paths: Paths) -> str:
        api_host, _, api_port = self.api.rpartition(":")
        state = paths.state
        sections: dict[str, dict[str, str]] = {
            "DEFAULT": {
                "host": self.instance, "bind_host": self.bind or api_host, "bind_port": api_port,
                "auth_strategy": "noauth", "api_paste_config": str(paths.etc / "api-paste.ini"),
                "state_path": str(state), "transport_url": f"rabbit://guest:guest@{self.amqp}/",
                "debug": str(self.debug), "log_file": str(paths.log(self.instance)), "use_stderr": "False",
                "use_credential_encryption": "False", "graceful_shutdown_timeout": "2",
                "crypt_key_dir": str(state / "crypt"),
                # oslo.log's defaults, plus tacker.common.log at DEBUG: one line per RPC method a conductor
                # runs ("... start_lcm_op called with arguments ... <lcmocc id>"): which conductor took an op
                "default_log_levels": LOG_LEVELS,
            },
            "database": {"connection": f"mysql+pymysql://{DB_USER}:{DB_PASSWORD}@{self.db}/{DB_NAME}?charset=utf8mb4"},
            "coordination": {"backend_url": f"file://{state / 'coordination'}"},
            "vnf_package": {"vnf_package_csar_path": f"{state / 'vnfpackages'}/"},
            "glance_store": {"stores": "file", "default_store": "file",
                             "filesystem_store_datadir": f"{state / 'csar_files'}/"},
            "oslo_concurrency": {"lock_path": str(state / "locks")},
            "v2_vnfm": {"endpoint": f"http://{self.api}"},
            "v2_nfvo": {"use_external_nfvo": "False"},
            "vnf_lcm": {"endpoint_url": f"http://{self.api}/"},
        }
        for section, options in self.extra.items():
            sections.setdefault(section, {}).update(options)
        return "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()) + "\n"
                       for s, opts in sections.items())

    def write(self, paths: Paths) -> Path:
        for d in (paths.etc, paths.logs, paths.state, paths.state / "coordination", paths.state / "vnfpackages",
                  paths.state / "csar_files", paths.state / "locks", paths.state / "crypt"):
            d.mkdir(parents=True, exist_ok=True)
        api_paste(paths)
        path = paths.conf(self.instance)
        _write_atomic(path, self.render(paths))
        return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def wait_for(what: str, check, timeout: float, every: float = 0.2, log: Path | None = None) -> float:
    """Call `check()` until it is true; returns the seconds it took, raises BootstrapError after `timeout`."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise BootstrapError(f"{what}: not ready after {timeout:g} s" + (f" (log: {log})" if log else ""))
        time.sleep(every)
    return time.monotonic() - t0


def schema_upgrade(paths: Paths, conf: Path, timeout: float = 120.0) -> float:
    """`tacker-db-manage upgrade head`, once per run folder (a marker says it is done); returns its seconds."""
    marker = paths.tacker / SCHEMA_DONE
    if marker.exists():
        return 0.0
    t0 = time.monotonic()
    log = paths.log("schema")
    with log.open("ab") as out:
        try:
            rc = subprocess.call([str(VENV / "bin" / "tacker-db-manage"), "--config-file", str(conf), "upgrade",
                                  "head"], stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise BootstrapError(f"tacker-db-manage upgrade head: over {timeout:g} s (log: {log})") from e
    if rc != 0:
        raise BootstrapError(f"tacker-db-manage upgrade head failed (exit {rc}): see {log}")
    took = time.monotonic() - t0
    _write_atomic(marker, json.dumps({"took": took, "at": time.time()}) + "\n")
    return took


def tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def http_ready(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (OSError, ValueError):
        return False


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# --- processes -----------------------------------------------------------------------------------------------


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def labelled(run: str, owner: int | str | None = None, root: Path | None = None) -> list[int]:
    """PIDs of the live processes labelled with this run (and owner, and run folder, when given)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _environ(int(entry.name))
        if env.get(RUN_ENV) != run:
            continue
        if owner is not None and env.get(OWNER_ENV) != str(owner):
            continue
        if root is not None and env.get(DIR_ENV) != str(root):
            continue
        with contextlib.suppress(OSError):  # a zombie is no leftover
            if Path(f"/proc/{entry.name}/stat").read_text().split(") ", 1)[1][0] == "Z":
                continue
        found.append(int(entry.name))
    return found


def sweep(run: str, owner: int | str | None = None, root: Path | None = None) -> list[int]:
    """SIGKILL, by PID, every live process labelled with this run (epmd, anything a node left): returns them."""
    pids = labelled(run, owner, root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
    return pids


def _all_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return []


def _pgid(pid: int) -> int:
    st = _stat(pid)
    return int(st[2]) if len(st) > 2 and st[0] != "Z" else -1


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Proc:
    """One process of the stack, started in its own session."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    started: float  # time.monotonic() at spawn
    ready_in: float = float("nan")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """To its whole session's group (it leads one): the program and anything it spawned."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 2.0) -> int | None:
        """SIGCONT + SIGTERM, SIGKILL after `grace` s; reaped."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5)
        self.signal(signal.SIGKILL)  # whatever of its group outlived it
        return self.popen.poll()

    def kill(self) -> None:
        """The crash fault: SIGKILL to the process (not its group: what it spawned lives on, as it would)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


RUN_PY = HERE / "run.py"


class Stack:
    """The whole Tacker deployment of one run, from the same commands a target file runs (run.py)."""

    def __init__(self, root: str | os.PathLike[str], run: str | None = None, host: str = "127.0.0.1",
                 conductors: int = 2, owner: int | None = None, debug: bool = False, spec: bool = False) -> None:
        """`spec`: start each component as a target file's instance is started (argv `run.py <component>`,
        everything else in MANOBENCH_SPEC; a conductor's readiness is its health sidecar's port), instead of
        with flags."""
        self.paths = Paths.of(root)
        self.run = run or f"tacker-{os.getpid()}-{os.urandom(3).hex()}"
        self.owner = owner if owner is not None else os.getpid()
        self.host = host
        self.ports = {"db": free_port(host), "amqp": free_port(host), "dist": free_port(host),
                      "epmd": free_port(host), "vim": free_port(host), "api": free_port(host)}
        self.conductor_ids = [f"conductor-{i + 1}" for i in range(conductors)]
        self.spec = spec
        if spec:
            self.ports.update({f"health:{c}": free_port(host) for c in self.conductor_ids})
        self.debug = debug
        self.procs: dict[str, Proc] = {}
        self.timings: dict[str, float] = {}

    # addresses
    def addr(self, plane: str) -> str:
        return f"{self.host}:{self.ports[plane]}"

    @property
    def api_url(self) -> str:
        return f"http://{self.addr('api')}"

    @property
    def vim_url(self) -> str:
        return f"http://{self.addr('vim')}"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in (SPEC_ENV,)}
        return {**base, **labels(self.run, self.owner, self.paths.root)}

    def spec_of(self, name: str) -> dict[str, object]:
        """The MANOBENCH_SPEC a target file's instance `name` would get (protocol.spec.ServiceSpec's fields)."""
        db, amqp = {"mariadb": {"db": self.addr("db")}}, {"rabbitmq": {"amqp": self.addr("amqp")}}
        ports: dict[str, int]
        peers: dict[str, dict[str, str]] = {}
        if name == "mariadb":
            role, ports = "database", {"db": self.ports["db"]}
        elif name == "rabbitmq":
            role, ports = "broker", {k: self.ports[k] for k in ("amqp", "dist", "epmd")}
        elif name == "vim":
            role, ports = "vim", {"vim": self.ports["vim"]}
        elif name == "server":
            role, ports, peers = "server", {"api": self.ports["api"]}, {**db, **amqp}
        else:
            role, ports = "conductor", {"health": self.ports[f"health:{name}"]}
            peers = {**db, **amqp, "server": {"api": self.addr("api")}}
        return {"id": name, "role": role, "run": self.run, "bind": self.host, "ports": ports, "z": {},
                "peers": peers}

    def argv(self, component: str, instance: str | None = None) -> list[str]:
        """The command of one component: the one a target file's instance would run."""
        if self.spec:
            return [sys.executable, str(RUN_PY), component]
        d, h = str(self.paths.root), self.host
        common = ["--dir", d, "--run", self.run]
        if component == "mariadb":
            return [sys.executable, str(RUN_PY), "mariadb", *common, "--bind", h, "--port", str(self.ports["db"])]
        if component == "rabbitmq":
            return [sys.executable, str(RUN_PY), "rabbitmq", *common, "--bind", h, "--port", str(self.ports["amqp"]),
                    "--dist-port", str(self.ports["dist"]), "--epmd-port", str(self.ports["epmd"])]
        if component == "vim":
            return [sys.executable, str(RUN_PY), "vim", *common, "--bind", h, "--port", str(self.ports["vim"])]
        tail = ["--db", self.addr("db"), "--amqp", self.addr("amqp"), "--api", self.addr("api")]
        if self.debug:
            tail.append("--debug")
        if component == "server":
            return [sys.executable, str(RUN_PY), "server", *common, "--id", instance or "server", *tail]
        if component == "conductor":
            return [sys.executable, str(RUN_PY), "conductor", *common, "--id", instance or "conductor-1", *tail]
        raise ValueError(component)

    def spawn(self, name: str, argv: list[str]) -> Proc:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        with self.paths.log(f"{name}.stdout").open("ab") as out:
            env = self.env()
            if self.spec:
                env[SPEC_ENV] = json.dumps(self.spec_of(name))
            popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True, cwd=str(self.paths.root))
        proc = Proc(name, argv, popen, time.monotonic())
        self.procs[name] = proc
        return proc

    def _wait(self, name: str, check, timeout: float) -> float:
        proc = self.procs[name]

        def ok() -> bool:
            if not proc.alive():
                raise BootstrapError(f"{name} exited ({proc.popen.returncode}): see {self.paths.log(name + '.stdout')}"
                                     f" and {self.paths.log(name)}")
            return bool(check())

        wait_for(name, ok, timeout, log=self.paths.log(f"{name}.stdout"))
        proc.ready_in = time.monotonic() - proc.started
        self.timings[name] = proc.ready_in
        return proc.ready_in

    def ready_check(self, name: str):
        if name == "mariadb":
            return lambda: mariadb_ready(self.host, self.ports["db"])
        if name == "rabbitmq":
            return lambda: amqp_ready(self.host, self.ports["amqp"])
        if name == "vim":
            return lambda: http_ready(f"{self.vim_url}/health")
        if name == "server":
            return lambda: http_ready(f"{self.api_url}/")
        if name in self.conductor_ids and self.spec:  # as a runtime sees it: the sidecar's port accepts
            return lambda: tcp_accepts(self.host, self.ports[f"health:{name}"])
        if name in self.conductor_ids:
            return lambda: conductor_consumers(self.addr("amqp"), name) > 0
        raise ValueError(name)

    def start(self, name: str, timeout: float = 120.0, wait: bool = True) -> Proc:
        component = "conductor" if name in self.conductor_ids else name
        proc = self.spawn(name, self.argv(component, name))
        if wait:
            self._wait(name, self.ready_check(name), timeout)
        return proc

    def up(self, timeout: float = 180.0) -> dict[str, float]:
        """Start every component at once (the server and the conductors wait for the database, the broker and
        the schema themselves) and return seconds-to-ready per component, from its spawn, checked in turn
        every 0.1 s; `total` is the whole, `schema` the `upgrade head` inside the server's."""
        t0 = time.monotonic()
        self.paths.root.mkdir(parents=True, exist_ok=True)
        names = ["mariadb", "rabbitmq", "vim", "server", *self.conductor_ids]
        for name in names:
            self.start(name, wait=False)
        pending = {name: self.ready_check(name) for name in names}
        while pending:
            for name, check in list(pending.items()):
                proc = self.procs[name]
                if not proc.alive():
                    raise BootstrapError(f"{name} exited ({proc.popen.returncode}): see "
                                         f"{self.paths.log(name + '.stdout')} and {self.paths.log(name)}")
                if check():
                    proc.ready_in = time.monotonic() - proc.started
                    self.timings[name] = proc.ready_in
                    del pending[name]
            if pending and time.monotonic() - t0 > timeout:
                raise BootstrapError(f"not ready after {timeout:g} s: {', '.join(pending)} (logs: {self.paths.logs})")
            time.sleep(0.1)
        self.timings["total"] = time.monotonic() - t0
        marker = self.paths.tacker / SCHEMA_DONE
        with contextlib.suppress(OSError, ValueError):
            self.timings["schema"] = json.loads(marker.read_text())["took"]
        return dict(self.timings)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def group(self, name: str) -> list[int]:
        """The live processes of a component: its process group (a conductor is a cotyledon master and its
        worker; the broker's epmd is a daemon of its own, counted with the broker)."""
        proc = self.procs.get(name)
        if proc is None or not proc.alive():
            return []
        pids = [p for p in _all_pids() if _pgid(p) == proc.pid]
        if name == "rabbitmq":
            pids += [p for p in labelled(self.run, self.owner, self.paths.root)
                     if _comm(p) == "epmd" and p not in pids]
        return pids

    def memory(self) -> dict[str, float]:
        """PSS in MB per component (its whole group), and `tacker` (server + conductors) and `total`."""
        out = {name: round(sum(_pss_kb(p) for p in self.group(name)) / 1024, 1) for name in self.procs}
        out["tacker"] = round(sum(v for k, v in out.items() if k == "server" or k in self.conductor_ids), 1)
        out["total"] = round(sum(v for k, v in out.items() if k != "tacker"), 1)
        return out

    def stop(self, name: str, grace: float = 2.0) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            proc.stop(grace)

    def down(self, grace: float = 2.0) -> list[int]:
        """Stop everything (Tacker first, then the VIM stub, the broker, the database), then SIGKILL by PID
        whatever is still labelled with this run and owner (epmd). Returns the PIDs the sweep found."""
        order = [*self.conductor_ids, "server", "vim", "rabbitmq", "mariadb"]
        procs = [self.procs[n] for n in order + [n for n in self.procs if n not in order] if n in self.procs]
        for proc in procs:  # all at once: SIGTERM, one shared grace, then SIGKILL (Tacker ignores SIGTERM ~60 s)
            if proc.alive():
                proc.signal(signal.SIGCONT)
                proc.signal(signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, end - time.monotonic()))
        for proc in procs:
            proc.stop(0.0)
        left = sweep(self.run, self.owner, self.paths.root)
        if left:
            time.sleep(0.2)
        return left

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt (as Ctrl-C does), so a `with Stack(...)` block tears down."""
    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> None:
    """`python examples/tacker/bootstrap.py DIR [--conductors N]`: bring the stack up, print its addresses
    and timings as JSON, keep it up until Ctrl-C (or SIGTERM), then take it down."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("dir")
    p.add_argument("--conductors", type=int, default=2)
    p.add_argument("--spec", action="store_true", help="start the instances from MANOBENCH_SPEC, as a runtime would")
    p.add_argument("--run")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args(argv)
    stack = Stack(a.dir, a.run, conductors=a.conductors, debug=a.debug, spec=a.spec)
    with signals_raise(), stack:
        try:
            timings = stack.up()
            print(json.dumps({"run": stack.run, "api": stack.api_url, "vim": stack.vim_url,
                              "pids": {n: p.pid for n, p in stack.procs.items()}, "ready_in": timings}, indent=1),
                  flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
