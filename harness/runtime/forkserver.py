"""A fork server (a zygote): one interpreter imports what a kind of process needs once, then forks a child per
process it is asked for and runs `python -m MODULE ARGS...` in it, without a new interpreter.

Why: on this machine an interpreter that imports the services' code (aiohttp above all) costs about 0.5 CPU s,
and a trial starts 5-40 services: that start-up burst, not the measured load, was most of a trial's CPU
(docs/analysis.md, "Speed"). A fork of the preloaded server costs a few ms, so a deployment of N services pays
one start-up instead of N, and a sweep one trial process start-up (1 CPU s: the harness's imports) instead of
one per trial; each child runs the same code as `python -m MODULE` would.

What holds as with one exec per process: every child runs in a session of its own, with stdin on /dev/null and
stdout and stderr appended to its log; it gets PR_SET_PDEATHSIG (SIGKILL when the server dies, and the server
dies with the harness that started it), so nothing outlives the harness even when it is SIGKILLed; and it
carries the run's labels: a forked child's /proc/PID/environ is the server's, which the runtime starts with
MANOBENCH_RUN and MANOBENCH_OWNER, so `harness clean` finds children and server alike. Its own variables (the
service spec) are set in `os.environ` after the fork. Its CPU counters start at zero (fork resets them), and
the server reaps it, so the trial's RUSAGE_CHILDREN still covers it once the server is reaped.

The server (`python -m harness.runtime.forkserver MODULE PRELOAD...`, where a PRELOAD `pkg.*` is a package and
every module in it) speaks JSON lines: on stdin `{"name", "args", "env", "log", "nice"}` (one process to
start), on stdout `{"name", "pid"}` once forked and `{"pid", "code"}` once that child exited (code as asyncio
reports it: the exit status, or minus the signal that ended it). SIGTERM, or stdin closing, makes it take no
more requests and exit once every child has exited; it never signals a child itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import os
import pkgutil
import runpy
import select
import signal
import sys
import traceback
from pathlib import Path
from typing import TypedDict

PR_SET_PDEATHSIG = 1
READY = "forkserver ready"
ENV = "MANOBENCH_FORKSERVER"  # "0": no fork server; every process its own interpreter, as before it existed


def enabled() -> bool:
    """Whether to fork from a server (the default) rather than start an interpreter per process."""
    return os.environ.get(ENV, "1") != "0"


# --- the server process ------------------------------------------------------------------------------------

def preload(names: list[str]) -> None:
    """Import each name (`pkg.*`: the package and every module in it), so children find them in sys.modules.
    An optional module that cannot be imported here is left to the child that needs it (which then fails as
    it would)."""
    for name in names:
        if not name.endswith(".*"):
            importlib.import_module(name)
            continue
        package = importlib.import_module(name.removesuffix(".*"))
        for found in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=f"{package.__name__}.",
                                           onerror=lambda _name: None):
            if not found.name.endswith("__main__"):  # run afresh in each child, as `python -m` would
                with contextlib.suppress(Exception):
                    importlib.import_module(found.name)


class SpawnRequest(TypedDict):
    """One request line to the server: fork a child that runs the module with `args`, `env` added, its output
    to `log`, at `nice`."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: str
    nice: int


class Reply(TypedDict, total=False):
    """One reply line of the server: {ready} once its preloads are imported, {name, pid} for each fork, {pid,
    code} for each child's exit; {} (on the harness side) once the server is gone."""

    ready: str
    name: str
    pid: int
    code: int


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """PR_SET_PDEATHSIG: `sig` to this process when its parent dies (even SIGKILLed); a sweep's trial asks for
    SIGINT, so its run tears down in order. The caller checks that the parent had not died already."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def _child(module: str, request: SpawnRequest, keep: list[int], server: int) -> None:
    """In the forked child: become the process the request describes, run MODULE as __main__, never return."""
    code = 1
    try:
        for fd in keep:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as in a fresh interpreter
        os.setsid()
        die_with_parent()
        if os.getppid() != server:  # the server died before the death signal was armed
            os._exit(1)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.environ.update(request.get("env", {}))
        if request.get("nice"):
            os.nice(request["nice"])
        sys.argv = [module, *request.get("args", [])]
        sys.modules.pop(module, None)  # run afresh as __main__, as `python -m` does (its imports stay loaded)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # whatever it was, the child ends here and says why in its log
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(module: str, preloads: list[str]) -> int:
    """The server's loop: fork on each request line, report each child's exit, until told to stop and alone."""
    die_with_parent()
    preload(preloads)
    replies = os.dup(1)  # the reply channel; fd 1 goes to the log, so no stray print can corrupt it
    os.dup2(2, 1)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    closing = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal closing
        closing = True

    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # a handler, so the wake-up fd hears of exits
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the harness, which tears down in order

    def reply(message: Reply) -> None:
        os.write(replies, (json.dumps(message) + "\n").encode())

    children: set[int] = set()
    server = os.getpid()
    pending = b""
    reply({"ready": READY})
    while not closing or children:
        readable: list[int] = []
        with contextlib.suppress(InterruptedError):
            readable = select.select([wake_r] if closing else [0, wake_r], [], [], 1.0)[0]
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
            reply({"pid": pid, "code": os.waitstatus_to_exitcode(status)})
        if closing or 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            closing = True
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request: SpawnRequest = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(module, request, [replies, wake_r, wake_w], server)
            children.add(pid)
            reply({"name": request["name"], "pid": pid})
    return 0


# --- the harness side ----------------------------------------------------------------------------------------

class Forked:
    """A process the server forked, seen as an asyncio subprocess is: pid, returncode, wait(), signals."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The server process of one runtime, and the children it forked for it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.children: dict[int, Forked] = {}
        self._replies: asyncio.Queue[Reply] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, module: str, preloads: list[str], env: dict[str, str], log: Path,
                    timeout: float = 30.0) -> ForkServer:
        """Start the server of `module` (with `env`, in its own session, its stderr to `log`) and wait until it
        has imported `preloads`."""
        with log.open("ab") as fh:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, module, *preloads, env=env, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=fh, start_new_session=True)
        server = cls(proc)
        try:
            await asyncio.wait_for(server._reply("ready"), timeout)
        except BaseException:
            await server.close(grace=0)
            raise
        return server

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message: Reply = json.loads(line)
            if "code" in message:
                child = self.children.get(message["pid"])
                if child is not None:
                    child.exited(message["code"])
                continue
            if "pid" in message:  # known before the next line is read, which may be its exit
                self.children[message["pid"]] = Forked(message["pid"])
            self._replies.put_nowait(message)
        for child in self.children.values():  # the server is gone, and its children died with it (PDEATHSIG)
            child.exited(-signal.SIGKILL)
        self._replies.put_nowait({})

    async def _reply(self, key: str) -> Reply:
        message = await self._replies.get()
        if key not in message:
            raise RuntimeError(f"the fork server ended (exit {await self.proc.wait()}): see its log")
        return message

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def spawn(self, name: str, env: dict[str, str], log: Path, args: list[str] | None = None,
                    nice: int = 0) -> Forked:
        """Fork one process running the server's module with `args`, `env` added, at `nice`; returns once it
        exists."""
        assert self.proc.stdin is not None
        request: SpawnRequest = {"name": name, "args": args or [], "env": env, "log": str(log), "nice": nice}
        async with self._lock:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            await self.proc.stdin.drain()
            pid = (await asyncio.wait_for(self._reply("pid"), 30))["pid"]
        return self.children[pid]

    async def close(self, grace: float = 2.0) -> None:
        """Let the server exit once its children have (stdin closed); SIGKILL it, and so them, after `grace`."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        await self._reader


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python -m harness.runtime.forkserver MODULE [PRELOAD...]  (internal: the local runtime and "
              "sweeps start it)", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(serve(sys.argv[1], sys.argv[2:]))
