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

`stack.Stack` is the library form used by smoke.py and scenarios.py: it starts each component with the very
command a target file would run, waits for it, and stops them all (SIGTERM, SIGKILL after a short grace:
Tacker's services otherwise take a minute to exit) on exit, error and Ctrl-C; stack.py also finds the
processes a run left behind, by their labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
