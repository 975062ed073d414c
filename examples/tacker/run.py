#!/usr/bin/env python3
"""One Tacker component as one foreground command: what a target file's instance runs.

    python examples/tacker/run.py mariadb   --dir D --port P [--bind H]
    python examples/tacker/run.py rabbitmq  --dir D --port P [--dist-port P2 --epmd-port P3]
    python examples/tacker/run.py vim       --dir D --port P [--latency S --error-rate R]
    python examples/tacker/run.py server    --dir D --id server    --api H:P --db H:P --amqp H:P
    python examples/tacker/run.py conductor --dir D --id conductor-1 --api H:P --db H:P --amqp H:P [--health-port P]
    python examples/tacker/run.py ready <component> [same flags] [--wait SECONDS]   (exit 0 once ready)
    python examples/tacker/run.py clean --run RUN_ID   (SIGKILL what is labelled with the run)

Each prepares its files under the run folder D and then execs the program (mariadbd, the Erlang VM,
vimstub.py, tacker-server, tacker-conductor): the process started *is* the program. With MANOBENCH_SPEC in
the environment (protocol/spec.py: id, bind, ports {plane: port}, peers {id: {plane: "host:port"}}), flags
not given are taken from it: the port of plane `db` (mariadb), `amqp` (+ optional `dist`, `epmd`: rabbitmq),
`vim`, `api` (server); the database, the broker and the API are the peers' planes `db`, `amqp` and `api`.
A conductor listens on no port: with `--health-port` (or a `health` plane in the spec) a sidecar opens that
port once the conductor consumes its RPC queue, for a runtime whose readiness is a port or an HTTP 200.
The run folder comes from --dir, else MANOBENCH_TACKER_DIR, else the spec's `workdir`, else MANOBENCH_WORKDIR,
else <F>/tacker-state when our stdout is <F>/logs/<id>.log (the local runtime's layout), else
$TMPDIR/manobench-tacker-<run> (the same for every instance of a run: they share Tacker's state folder).

Any Python runs it (standard library only); the Tacker venv (.venv-tacker) is used for Tacker's programs and
for `ready conductor` (kombu). The server and the conductors wait for the database, the broker and the schema
before they exec, so the start order of the instances does not matter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):
    sys.path.insert(0, str(HERE))
    import bootstrap as b  # type: ignore[import-not-found,no-redef]
    import stack as st  # type: ignore[import-not-found,no-redef]
else:
    from . import bootstrap as b
    from . import stack as st

WAIT_DEPS = 180.0  # seconds the server and the conductors wait for the database, the broker, the schema


def _spec() -> dict:
    text = os.environ.get(b.SPEC_ENV)
    return json.loads(text) if text else {}


def _peer(spec: dict, plane: str) -> str | None:
    for planes in (spec.get("peers") or {}).values():
        if isinstance(planes, dict) and plane in planes:
            return str(planes[plane])
    return None


def _resolve(a: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags not given from MANOBENCH_SPEC."""
    spec = _spec()
    ports = spec.get("ports") or {}
    a.run = a.run or spec.get("run") or os.environ.get(b.RUN_ENV) or "manual"
    a.id = a.id or spec.get("id") or a.component
    a.bind = a.bind or spec.get("bind") or "127.0.0.1"
    plane = {"mariadb": "db", "rabbitmq": "amqp", "vim": "vim", "server": "api"}.get(a.component)
    if not a.port and plane and plane in ports:
        a.port = int(ports[plane])
    if a.component == "rabbitmq":
        a.dist_port = a.dist_port or ports.get("dist")
        a.epmd_port = a.epmd_port or ports.get("epmd")
    if a.component in ("server", "conductor"):
        a.db = a.db or _peer(spec, "db")
        a.amqp = a.amqp or _peer(spec, "amqp")
        if not a.api:
            a.api = f"{a.bind}:{a.port}" if a.component == "server" and a.port else _peer(spec, "api")
        a.api = a.api or "127.0.0.1:9890"
    if a.component == "conductor" and not a.health_port and "health" in ports:
        a.health_port = int(ports["health"])
    a.dir = (a.dir or os.environ.get(b.DIR_ENV) or spec.get("workdir") or os.environ.get("MANOBENCH_WORKDIR")
             or _beside_our_log(a.id) or str(Path(tempfile.gettempdir()) / f"manobench-tacker-{a.run}"))
    return a


def _beside_our_log(instance: str) -> str | None:
    """The harness's local runtime sends an instance's output to <run folder>/logs/<id>.log and says nothing
    else of the run folder: when our stdout is that file, Tacker's files go to <run folder>/tacker-state (every
    instance of the run finds the same one). A stop-gap until the runtime names the folder (NOTES.md)."""
    try:
        out = Path(os.readlink("/proc/self/fd/1"))
    except OSError:
        return None
    if out.name == f"{instance}.log" and out.parent.name == "logs" and out.parent.parent.is_dir():
        return str(out.parent.parent / "tacker-state")
    return None


def _labelled_env(a: argparse.Namespace, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault(b.RUN_ENV, a.run)
    env.setdefault(b.OWNER_ENV, str(os.getppid()))
    env[b.DIR_ENV] = str(b.Paths.of(a.dir).root)
    env.update(extra or {})
    return env


def _exec(argv: list[str], env: dict[str, str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def _need(value: object, flag: str, component: str) -> None:
    if not value:
        raise b.BootstrapError(f"{component}: no {flag} (a flag, or MANOBENCH_SPEC)")


def _rabbit_ports(a: argparse.Namespace, paths: b.Paths) -> tuple[int, int]:
    """The node's Erlang distribution and epmd ports: given, else those of this run folder's last start
    (a restarted node finds its epmd again), else free ones, remembered."""
    saved = paths.rabbitmq / "ports.json"
    old = {}
    if saved.exists():
        try:
            old = json.loads(saved.read_text())
        except ValueError:
            old = {}
    dist = int(a.dist_port or old.get("dist") or b.free_port(a.bind))
    epmd = int(a.epmd_port or old.get("epmd") or b.free_port("127.0.0.1"))
    paths.rabbitmq.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"dist": dist, "epmd": epmd}))
    return dist, epmd


def cmd_mariadb(a: argparse.Namespace) -> None:
    _need(a.port, "--port", "mariadb")
    argv = b.mariadb_argv(b.Paths.of(a.dir), a.bind, a.port)
    _exec(argv, _labelled_env(a))


def cmd_rabbitmq(a: argparse.Namespace) -> None:
    _need(a.port, "--port", "rabbitmq")
    paths = b.Paths.of(a.dir)
    dist, epmd = _rabbit_ports(a, paths)
    argv, env = b.rabbitmq_argv_env(paths, a.run, a.bind, a.port, dist, epmd)
    env = _labelled_env(a, env)
    _epmd_keeper(epmd, env)
    _exec(argv, env)


def _epmd_keeper(port: int, env: dict[str, str]) -> None:
    """The node's epmd, in the node's own session and group, ended with the node. Left to itself RabbitMQ
    starts `epmd -daemon`, a process of its own session that outlives the node (a runtime that kills the
    node's PID leaves it running). Here a child of the node (forked before the exec) runs `epmd` in the
    foreground on the node's epmd port, and ends it when the node's process is gone; RabbitMQ finds an epmd
    already listening and starts none. A group kill ends both at once."""
    parent = os.getpid()
    if os.fork() == 0:
        try:
            os.execve(sys.executable, [sys.executable, str(HERE / "run.py"), "epmd-keeper", "--parent", str(parent),
                                       "--port", str(port)], env)
        finally:
            os._exit(1)
    t0 = time.monotonic()
    while not b.tcp_accepts("127.0.0.1", port, 0.5) and time.monotonic() - t0 < 10.0:
        time.sleep(0.05)


def cmd_epmd_keeper(a: argparse.Namespace) -> None:
    import shutil
    import signal
    import subprocess

    epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    proc = subprocess.Popen([epmd, "-port", str(a.port), "-address", "127.0.0.1"], stdin=subprocess.DEVNULL)

    def end(*_: object) -> None:
        proc.kill()
        proc.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    while proc.poll() is None:
        try:
            os.kill(a.parent, 0)
            alive = os.getppid() == a.parent
        except ProcessLookupError:
            alive = False
        if not alive:
            end()
        time.sleep(0.2)


def cmd_vim(a: argparse.Namespace) -> None:
    _need(a.port, "--port", "vim")
    py = sys.executable if importlib.util.find_spec("aiohttp") else b.venv_python()
    argv = [py, str(HERE / "vimstub.py"), "--bind", a.bind, "--port", str(a.port)]
    for flag, value in (("--latency", a.latency), ("--error-rate", a.error_rate),
                        ("--stack-seconds", a.stack_seconds), ("--seed", a.seed)):
        if value is not None:
            argv += [flag, str(value)]
    _exec(argv, _labelled_env(a))


def _tacker(a: argparse.Namespace, program: str) -> None:
    for flag in ("db", "amqp"):
        _need(getattr(a, flag), f"--{flag}", a.component)
    paths = b.Paths.of(a.dir)
    conf = b.TackerConf(a.id, a.db, a.amqp, a.api, bind=a.bind if a.component == "server" else None,
                        debug=a.debug).write(paths)
    t0 = time.monotonic()
    b.wait_for(f"{a.id}: the database at {a.db}", lambda: b.mariadb_ready(*b._addr(a.db)), WAIT_DEPS)
    b.wait_for(f"{a.id}: the broker at {a.amqp}", lambda: b.amqp_ready(*b._addr(a.amqp)), WAIT_DEPS)
    if a.component == "server":
        took = b.schema_upgrade(paths, conf)
        if took:
            print(f"{a.id}: schema upgraded in {took:.1f} s", file=sys.stderr, flush=True)
    else:
        marker = paths.tacker / b.SCHEMA_DONE
        b.wait_for(f"{a.id}: the schema ({marker})", marker.exists, WAIT_DEPS)
    print(f"{a.id}: dependencies ready after {time.monotonic() - t0:.1f} s; exec {program}", file=sys.stderr,
          flush=True)
    env = _labelled_env(a)
    if a.component == "conductor" and a.health_port:
        _health_sidecar(a, env)
    _exec([str(b.VENV / "bin" / program), "--config-file", str(conf)], env)


def _health_sidecar(a: argparse.Namespace, env: dict[str, str]) -> None:
    """A conductor listens on no port; a runtime that knows readiness only as a port accepting connections
    (or an HTTP 200) gets one here: a child (same session and group, so a group kill takes it too) that opens
    `--health-port` once the conductor's own RPC queue has a consumer, answers 200 to any HTTP request, and
    exits when the conductor does. Its PID is not the conductor's: the conductor is the process started."""
    parent = os.getpid()
    if os.fork() == 0:
        try:
            py = b.venv_python()
            os.execve(py, [py, str(HERE / "run.py"), "sidecar", "--parent", str(parent), "--bind", a.bind,
                           "--port", str(a.health_port), "--amqp", a.amqp, "--id", a.id], env)
        finally:
            os._exit(1)


def cmd_sidecar(a: argparse.Namespace) -> None:
    """The health sidecar's loop (see _health_sidecar)."""
    def parent_alive() -> bool:
        try:
            os.kill(a.parent, 0)
        except ProcessLookupError:
            return False
        return os.getppid() == a.parent
    while parent_alive() and b.conductor_consumers(a.amqp, a.id) < 1:
        time.sleep(0.5)
    if not parent_alive():
        return
    srv = socket.create_server((a.bind, a.port), reuse_port=False)
    srv.settimeout(0.5)
    while parent_alive():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(1.0)
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n"
                             b"Connection: close\r\n\r\n{\"ok\": true}")
            except OSError:
                pass


def cmd_server(a: argparse.Namespace) -> None:
    _tacker(a, "tacker-server")


def cmd_conductor(a: argparse.Namespace) -> None:
    _tacker(a, "tacker-conductor")


def ready_once(a: argparse.Namespace) -> bool:
    c = a.component
    if c == "mariadb":
        return b.mariadb_ready(a.bind, a.port)
    if c == "rabbitmq":
        return b.amqp_ready(a.bind, a.port)
    if c == "vim":
        return b.http_ready(f"http://{a.bind}:{a.port}/health")
    if c == "server":
        return b.http_ready(f"http://{a.api}/")
    if c == "conductor":
        return b.conductor_consumers(a.amqp, a.id) > 0
    raise SystemExit(f"ready: unknown component {c}")


def cmd_ready(a: argparse.Namespace) -> None:
    if a.component == "conductor" and importlib.util.find_spec("kombu") is None:
        os.execv(b.venv_python(), [b.venv_python(), str(HERE / "run.py"), *sys.argv[1:]])
    t0 = time.monotonic()
    while True:
        if ready_once(a):
            sys.exit(0)
        if time.monotonic() - t0 >= a.wait:
            sys.exit(1)
        time.sleep(0.2)


def cmd_clean(a: argparse.Namespace) -> None:
    pids = st.sweep(a.run)
    print(f"clean: {len(pids)} process(es) of run {a.run} killed: {pids}")


COMMANDS = {"mariadb": cmd_mariadb, "rabbitmq": cmd_rabbitmq, "vim": cmd_vim, "server": cmd_server,
            "conductor": cmd_conductor}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="One Tacker component, in the foreground (see the module doc).")
    sub = p.add_subparsers(dest="command", required=True)

    def flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dir", help="the run folder")
        sp.add_argument("--run", help="the run id (default MANOBENCH_SPEC's run, MANOBENCH_RUN)")
        sp.add_argument("--id", help="the instance id (a conductor's RPC host name)")
        sp.add_argument("--bind", help="the address to listen on (default the spec's bind, 127.0.0.1)")
        sp.add_argument("--port", type=int, help="the component's port")
        sp.add_argument("--dist-port", type=int, help="rabbitmq: the Erlang distribution port")
        sp.add_argument("--epmd-port", type=int, help="rabbitmq: epmd's port")
        sp.add_argument("--db", help="server/conductor: MariaDB host:port")
        sp.add_argument("--amqp", help="server/conductor: RabbitMQ host:port")
        sp.add_argument("--api", help="server/conductor: tacker-server host:port (the server binds to it)")
        sp.add_argument("--debug", action="store_true", help="server/conductor: Tacker's debug logging")
        sp.add_argument("--latency", help="vim: seconds per call, or JSON {kind: seconds}")
        sp.add_argument("--error-rate", help="vim: fraction of calls answered 503, or JSON {kind: rate}")
        sp.add_argument("--stack-seconds", type=float, help="vim: how long a stack create takes")
        sp.add_argument("--seed", type=int, help="vim: the error draws' seed")
        sp.add_argument("--health-port", type=int,
                        help="conductor: a port to open once it consumes its RPC queue (default the spec's `health`)")

    for name in COMMANDS:
        flags(sub.add_parser(name))
    r = sub.add_parser("ready")
    r.add_argument("component", choices=sorted(COMMANDS))
    r.add_argument("--wait", type=float, default=0.0, help="keep checking this long (s)")
    flags(r)
    c = sub.add_parser("clean")
    c.add_argument("--run", required=True)
    ek = sub.add_parser("epmd-keeper")  # internal: the broker's epmd (see _epmd_keeper)
    ek.add_argument("--parent", type=int, required=True)
    ek.add_argument("--port", type=int, required=True)
    sc = sub.add_parser("sidecar")  # internal: the conductor's health port (see _health_sidecar)
    sc.add_argument("--parent", type=int, required=True)
    sc.add_argument("--bind", required=True)
    sc.add_argument("--port", type=int, required=True)
    sc.add_argument("--amqp", required=True)
    sc.add_argument("--id", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    try:
        if a.command == "clean":
            cmd_clean(a)
            return
        if a.command == "sidecar":
            cmd_sidecar(a)
            return
        if a.command == "epmd-keeper":
            cmd_epmd_keeper(a)
            return
        if a.command != "ready":
            a.component = a.command
        _resolve(a)
        if a.command == "ready":
            cmd_ready(a)
        else:
            COMMANDS[a.command](a)
    except b.BootstrapError as e:
        print(f"tacker {getattr(a, 'component', a.command)}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
