"""What the swarm runtime runs inside containers on the swarm's nodes: standalone (stdlib + aiohttp, both in
manobench-target), shipped as `python3 -c <this file's source> MODE ...` so the image needs nothing of the
harness (targets import nothing of the harness; this file imports nothing of either).

Modes:

- `agent HARNESS GRACE`: the fault agent, one task per node (a global service). HTTP on AGENT_PORT:
  `GET /clock` (this node's CLOCK_MONOTONIC and wall clock: the harness's NTP-style offset probe),
  `POST /kill|/pause|/unpause?container=ID` and `GET /stats?container=ID` through the node's own Engine API
  (its unix socket, bind-mounted read-only: a service can be neither privileged nor share the host's pid
  namespace through the SDK, and the Engine kills, freezes and counts any container of its node). It holds a
  connection to the harness (HARNESS: host:port of a listener of the harness's own, on the gateway) and ends
  itself once that has been gone for GRACE seconds (an orphan).
- `gateway PID STARTTIME GRACE`: the harness's network namespace on the overlay (harness.runtime.netns).
  It runs with the host's pid namespace and ends itself once the harness process (pid and start time, so a
  reused pid does not count) has been gone for GRACE seconds.
- `launch SPEC_URL`: a service's task: fetch its MANOBENCH_SPEC from the harness (its peers' addresses exist
  only once every task has one), then exec `python3 -m targets` in place, so the container's init process is
  the service, as on the docker runtime.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import sys
import time
import urllib.request

AGENT_PORT = 7990
ENGINE_SOCKET = "/var/run/docker.sock"


def _alive(sock: socket.socket | None) -> bool:
    """Whether a connection still stands, without blocking: readable with nothing to read means EOF."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return True
        return sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def _dial(address: str) -> socket.socket | None:
    host, _, port = address.rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=1)
    except OSError:
        return None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return sock


def watch_harness(address: str, grace: float) -> None:
    """Exit the process once the harness's listener at `address` has been unreachable for `grace` seconds."""
    sock = _dial(address)
    lost_since = None if sock else time.monotonic()
    while True:
        time.sleep(0.5)
        if _alive(sock):
            lost_since = None
            continue
        if sock is not None:
            sock.close()
        sock = _dial(address)
        if sock is not None:
            lost_since = None
            continue
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > grace:
            print(f"orphan: the harness at {address} has been gone for {grace:g} s: exiting",
                  file=sys.stderr, flush=True)
            os._exit(0)


def _starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def gateway(pid: int, started: str, grace: float) -> None:
    lost_since: float | None = None
    while True:
        time.sleep(0.5)
        if _starttime(pid) == started:
            lost_since = None
            continue
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > grace:
            print(f"orphan: harness pid {pid} has been gone for {grace:g} s: exiting", file=sys.stderr, flush=True)
            return


def launch(url: str, deadline: float = 300.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as resp:
                if resp.status == 200:
                    os.environ["MANOBENCH_SPEC"] = resp.read().decode()
                    break
        except OSError:
            pass
        if time.monotonic() > end:
            sys.exit(f"launch: no spec at {url} after {deadline:g} s")
        time.sleep(0.05)
    os.execvp("python3", ["python3", "-m", "targets"])


async def agent(harness: str, grace: float) -> None:
    import aiohttp
    from aiohttp import UnixConnector, web

    engine = aiohttp.ClientSession(connector=UnixConnector(path=ENGINE_SOCKET))
    node = socket.gethostname()

    async def clock(_req: web.Request) -> web.Response:
        return web.json_response({"t": time.monotonic(), "wall": time.time(), "node": node})

    async def engine_post(req: web.Request, path: str) -> web.Response:
        cid = req.query.get("container", "")
        t0 = time.monotonic()
        async with engine.post(f"http://engine/containers/{cid}/{path}") as resp:
            body = await resp.text()
            return web.json_response({"status": resp.status, "body": body[:300], "t": t0,
                                      "took": time.monotonic() - t0}, status=200 if resp.status < 300 else 502)

    async def kill(req: web.Request) -> web.Response:
        return await engine_post(req, "kill?signal=SIGKILL")

    async def pause(req: web.Request) -> web.Response:
        return await engine_post(req, "pause")

    async def unpause(req: web.Request) -> web.Response:
        return await engine_post(req, "unpause")

    async def stats(req: web.Request) -> web.Response:
        cid = req.query.get("container", "")
        async with engine.get(f"http://engine/containers/{cid}/stats?stream=false") as resp:
            data = await resp.json(content_type=None)
        cpu = data.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
        nets = data.get("networks") or {}
        return web.json_response({"cpu_s": cpu / 1e9 if cpu is not None else None,
                                  "rx_bytes": sum(n.get("rx_bytes", 0) for n in nets.values()),
                                  "tx_bytes": sum(n.get("tx_bytes", 0) for n in nets.values()),
                                  "mem_peak_bytes": data.get("memory_stats", {}).get("max_usage")})

    app = web.Application()
    app.add_routes([web.get("/clock", clock), web.post("/kill", kill), web.post("/pause", pause),
                    web.post("/unpause", unpause), web.get("/stats", stats), web.get("/health", clock)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", AGENT_PORT).start()
    if harness != "-":
        await asyncio.to_thread(watch_harness, harness, grace)
    else:
        await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else ""
    if mode == "agent":
        asyncio.run(agent(argv[1], float(argv[2])))
    elif mode == "gateway":
        gateway(int(argv[1]), argv[2], float(argv[3]))
    elif mode == "launch":
        launch(argv[1])
    else:
        sys.exit(f"swarm_agent: unknown mode {mode!r} (agent, gateway, launch)")


if __name__ == "__main__":
    main(sys.argv[1:])
