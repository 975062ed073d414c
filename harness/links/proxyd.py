"""proxyd: every link's latency proxy in one process, steered over a small HTTP control API.

One process for all links keeps a deployment's process count (and its CPU noise) independent of the number
of links. It must never outlive the harness that started it: it exits on SIGTERM/SIGINT and when its parent
dies (PR_SET_PDEATHSIG where Linux offers it, plus a once-a-second parent check everywhere).

    MANOBENCH_SECRET=KEY python -m harness.links.proxyd --spec links.json --control 127.0.0.1:7700 \
        [--ready-file F] [--parent PID]

Every control request but `GET /health` must carry KEY (the harness's control key, protocol.auth) in the
`X-Manobench-Secret` header, else it is answered 403 and counted (`refused` in /health): proxyd listens on
an address every service can reach, and a cut or a delay must come from the run's harness only. The key
comes in the environment, never on the command line (argv is world-readable in /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import urllib.parse
from pathlib import Path

from harness.links.proxy import LinkProxy, check_delay
from harness.links.spec import LinkSpec, format_hostport, load_specs, parse_hostport
from protocol import auth

_PR_SET_PDEATHSIG = 1
_SETTABLE = ("delay_fwd", "delay_rev", "jitter", "cut")


Answer = tuple[int, object]  # HTTP status, JSON body
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class Daemon:
    """The links plus their control API; `serve()` runs one until it is asked to stop.

    The control API is HTTP/1.1 with JSON bodies, one request a connection (the client, urllib, says
    `Connection: close`), served on plain asyncio streams: aiohttp's server cost 0.4 CPU s to import at every
    run's start, for five routes."""

    def __init__(self, specs: list[LinkSpec], control: tuple[str, int], secret: str) -> None:
        self.secret = secret
        self.refused = 0  # control requests without the key
        self.specs = {s.name: s for s in specs}
        self.proxies = {
            s.name: LinkProxy(
                s.listen, s.target, delay_fwd=s.delay_fwd, delay_rev=s.delay_rev, jitter=s.jitter,
                name=s.name, seed=s.seed,
            )
            for s in specs
        }
        self.control = control
        self.ready = False
        self.stop = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind every link first, so /health can only ever answer 200 with all listeners up."""
        for proxy in self.proxies.values():
            await proxy.start()
        self.server = await asyncio.start_server(self._serve, self.control[0], self.control[1], reuse_address=True)
        self.control = (self.control[0], self.server.sockets[0].getsockname()[1])
        self.ready = True

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
        await asyncio.gather(*(p.close() for p in self.proxies.values()))

    def link_state(self, name: str) -> dict[str, object]:
        state = self.proxies[name].stats()
        state["plane"] = self.specs[name].plane
        return state

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request: the request line, headers, a Content-Length body; one JSON answer; close."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line, *fields = head.decode("latin-1").split("\r\n")
            method, target, _version = line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
            body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length") or 0)), 10)
            path = [urllib.parse.unquote(part) for part in urllib.parse.urlsplit(target).path.split("/")[1:]]
            if path != ["health"] and not auth.matches(self.secret, headers.get(auth.HEADER.lower())):
                self.refused += 1
                status, answer = 403, {"error": "proxyd answers only to its run's harness"}  # type: Answer
            else:
                status, answer = self.route(method, path, body)
        except (ValueError, OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, answer = 400, {"error": "malformed request"}
        data = json.dumps(answer).encode()
        writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode("latin-1") + data)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    def route(self, method: str, path: list[str], body: bytes) -> Answer:
        """GET /health, GET /links, GET /links/NAME, POST /links/NAME (an update), POST /links/NAME/reset."""
        if path == ["health"]:
            return self.health() if method == "GET" else (405, {"error": "GET only"})
        if path[:1] != ["links"] or len(path) > 3 or (len(path) == 3 and path[2] != "reset"):
            return 404, {"error": "no such route"}
        if len(path) == 1:
            return (200, {name: self.link_state(name) for name in self.proxies}) if method == "GET" \
                else (405, {"error": "GET only"})
        name = path[1]
        if name not in self.proxies:
            return 404, {"error": f"no link named {name!r}"}
        if len(path) == 3:
            return (200, {"name": name, "reset": self.proxies[name].reset()}) if method == "POST" \
                else (405, {"error": "POST only"})
        if method == "GET":
            return 200, self.link_state(name)
        if method != "POST":
            return 405, {"error": "GET or POST"}
        return self.post_link(name, body)

    def health(self) -> Answer:
        if not self.ready:
            return 503, {"ok": False}
        return 200, {"ok": True, "links": len(self.proxies), "pid": os.getpid(), "refused": self.refused}

    def post_link(self, name: str, body: bytes) -> Answer:
        try:
            delays, cut = _parse_update(json.loads(body or b"{}"))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return 400, {"error": str(exc)}
        proxy = self.proxies[name]
        proxy.set(**delays)
        if cut is True:
            proxy.cut()
        elif cut is False:
            proxy.heal()
        return 200, self.link_state(name)


def _parse_update(body: object) -> tuple[dict[str, float], bool | None]:
    """Validate the whole update before applying any of it, so a 400 never leaves a half-applied change."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(body) - set(_SETTABLE)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; allowed: {', '.join(_SETTABLE)}")
    delays = {k: check_delay(k, body[k]) for k in ("delay_fwd", "delay_rev", "jitter") if k in body}
    cut = body.get("cut")
    if cut is not None and not isinstance(cut, bool):
        raise ValueError(f"cut must be true or false, got {cut!r}")
    return delays, cut


def _arm_parent_death_signal(parent: int, stop: asyncio.Event) -> None:
    """Ask Linux to signal us the moment the parent dies; elsewhere the polling watchdog alone covers it.

    Linux sends the death signal when the parent *thread* that forked us exits, even if the parent process
    lives on (a launcher in a worker thread). So the signal is SIGUSR1 and only ends us if we really were
    orphaned (the kernel reparents us before it signals, so getppid() has already changed).
    """
    if not sys.platform.startswith("linux"):
        return

    def on_signal() -> None:
        if os.getppid() != parent:
            stop.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_signal)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Also catches a parent that died before the death signal was armed, and non-Linux systems."""
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def _write_ready(path: Path, daemon: Daemon) -> None:
    """Atomic (write then rename), so a reader never sees half a file."""
    info = {
        "pid": os.getpid(),
        "control": format_hostport(daemon.control),
        "links": {name: format_hostport(p.listen) for name, p in daemon.proxies.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(path)


async def serve(specs: list[LinkSpec], control: tuple[str, int], parent: int, secret: str,
                ready_file: Path | None = None) -> None:
    daemon = Daemon(specs, control, secret)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop.set)
    _arm_parent_death_signal(parent, daemon.stop)
    watchdog = asyncio.create_task(_watch_parent(parent, daemon.stop))
    try:
        await daemon.start()
        if ready_file is not None:
            _write_ready(ready_file, daemon)
        await daemon.stop.wait()
    finally:
        watchdog.cancel()
        await daemon.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxyd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="JSON list of links")
    parser.add_argument("--control", required=True, help="host:port of the control API (port 0: any)")
    parser.add_argument("--ready-file", type=Path, help="write pid, control and link addresses here once up")
    parser.add_argument("--parent", type=int, help="exit when this pid is no longer our parent")
    args = parser.parse_args(argv)
    parent = args.parent if args.parent is not None else os.getppid()
    try:
        specs = load_specs(args.spec)
        control = parse_hostport(args.control, "--control")
    except ValueError as exc:
        print(f"proxyd: error: {exc}", file=sys.stderr)
        return 2
    secret = os.environ.pop(auth.SECRET_ENV, "")
    if not secret:
        print(f"proxyd: error: {auth.SECRET_ENV} (the control key) is not set in the environment", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(specs, control, parent, secret, args.ready_file))
    except OSError as exc:  # a listener that cannot bind: the launcher's problem, said in one line
        print(f"proxyd: error: cannot bind: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
