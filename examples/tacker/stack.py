"""The Tacker stack of one run as processes: finding them by their labels in /proc (`labelled`, `sweep`), one
started component (`Proc`), and the whole deployment (`Stack`), started from the very commands a target file
runs (run.py) and stopped on exit, error and Ctrl-C. The files, configuration and readiness of each component
are bootstrap.py's.

`python examples/tacker/stack.py DIR [--conductors N]` brings a stack up by hand and keeps it until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):
    sys.path.insert(0, str(HERE))
    from bootstrap import (  # type: ignore[import-not-found,no-redef]
        DIR_ENV,
        OWNER_ENV,
        RUN_ENV,
        SCHEMA_DONE,
        SPEC_ENV,
        BootstrapError,
        Paths,
        amqp_ready,
        conductor_consumers,
        free_port,
        http_ready,
        labels,
        mariadb_ready,
        tcp_accepts,
        wait_for,
    )
else:
    from .bootstrap import (
        DIR_ENV,
        OWNER_ENV,
        RUN_ENV,
        SCHEMA_DONE,
        SPEC_ENV,
        BootstrapError,
        Paths,
        amqp_ready,
        conductor_consumers,
        free_port,
        http_ready,
        labels,
        mariadb_ready,
        tcp_accepts,
        wait_for,
    )


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
    """`python examples/tacker/stack.py DIR [--conductors N]`: bring the stack up, print its addresses
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
