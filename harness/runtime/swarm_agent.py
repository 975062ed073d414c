"""What the swarm runtime runs inside containers on the swarm's nodes: standalone (stdlib + aiohttp, both in
manobench-target), shipped as `python3 -c <this file's source> MODE ...` so the image needs nothing of the
harness (targets import nothing of the harness; this file imports nothing of either).

Modes:

- `agent HARNESS GRACE RUN`: the fault agent, one task per node (a global service). HTTP on AGENT_PORT, bound
  to the agent's own address on the run's overlay only (the one it reaches HARNESS from), never 0.0.0.0:
  `GET /clock` (this node's CLOCK_MONOTONIC and wall clock: the harness's NTP-style offset probe; also the
  count of refused requests), `POST /kill|/pause|/unpause?container=ID` and `GET /stats?container=ID` through
  the node's own Engine API (its unix socket, bind-mounted read-only: a service can be neither privileged nor
  share the host's pid namespace through the SDK, and the Engine kills, freezes and counts any container of
  its node). Those four need the agent key (MANOBENCH_SECRET in its environment, read and dropped at start)
  in the X-Manobench-Secret header, take only a hex container id (12 to 64 hex digits: nothing else ever
  reaches the Engine's URL), and act only on a container whose `manobench.run` label is RUN, as the Engine
  says; anything else is answered 403 (or 404: no such container) and counted. It holds a connection to the
  harness (HARNESS: host:port of a listener of the harness's own, on the gateway) and ends itself once that
  has been gone for GRACE seconds (an orphan).
- `gateway HARNESS GRACE`: the harness's network namespace on the overlay (harness.runtime.netns). It ends
  itself once the harness's listener at HARNESS (inside this very namespace) has been gone for GRACE
  seconds, as the agent does: no host pid namespace is needed to watch the harness.
- `launch SPEC_URL`: a service's task: fetch its MANOBENCH_SPEC from the harness (its peers' addresses exist
  only once every task has one) with its key (MANOBENCH_SECRET in its environment, which the harness's spec
  server asks for: the spec carries the service's key), then exec `python3 -m targets` in place, so the
  container's init process is the service, as on the docker runtime.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import select
import socket
import sys
import time
import urllib.request

AGENT_PORT = 7990
ENGINE_SOCKET = "/var/run/docker.sock"
SECRET_ENV = "MANOBENCH_SECRET"  # protocol.auth.SECRET_ENV (this file imports nothing of the project)
HEADER = "X-Manobench-Secret"  # protocol.auth.HEADER
RUN_LABEL = "manobench.run"
CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}")


def _take_secret() -> str:
    """This process's key, removed from its environment so nothing it starts inherits it."""
    return os.environ.pop(SECRET_ENV, "")


def _signed(given: str | None, secret: str) -> bool:
    return bool(secret) and given is not None and hmac.compare_digest(given.encode(), secret.encode())


def overlay_address(harness: str) -> str:
    """This container's own address on the network it reaches `harness` (host:port) through: the address the
    kernel would send from (a UDP connect sends nothing)."""
    host, _, port = harness.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, int(port)))
        return str(sock.getsockname()[0])


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


def watch_harness(address: str, grace: float, startup: float = 0.0) -> None:
    """Exit the process once the harness's listener at `address` has been unreachable for `grace` seconds
    (`startup` more before it has been reached once: the gateway starts before the listener exists)."""
    sock = _dial(address)
    lost_since = None if sock else time.monotonic() + startup
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


GATEWAY_STARTUP = 60.0  # s the gateway waits for the harness's listener to appear at first


def gateway(harness: str, grace: float) -> None:
    watch_harness(harness, grace, startup=GATEWAY_STARTUP)


def launch(url: str, deadline: float = 300.0) -> None:
    end = time.monotonic() + deadline
    request = urllib.request.Request(url, headers={HEADER: _take_secret()})
    while True:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=2) as resp:
                if resp.status == 200:
                    os.environ["MANOBENCH_SPEC"] = resp.read().decode()
                    break
        except OSError:
            pass
        if time.monotonic() > end:
            sys.exit(f"launch: no spec at {url} after {deadline:g} s")
        time.sleep(0.05)
    os.execvp("python3", ["python3", "-m", "targets"])


async def agent(harness: str, grace: float, run: str) -> None:
    import aiohttp
    from aiohttp import UnixConnector, web

    secret = _take_secret()
    engine = aiohttp.ClientSession(connector=UnixConnector(path=ENGINE_SOCKET))
    node = socket.gethostname()
    refused = [0]

    async def clock(_req: web.Request) -> web.Response:
        return web.json_response({"t": time.monotonic(), "wall": time.time(), "node": node, "refused": refused[0]})

    async def of_this_run(req: web.Request) -> str:
        """The full id of the container the request names, once the key, the id's form and the container's
        run label are checked; else 403 (404: the Engine knows no such container), counted."""
        cid = req.query.get("container", "")
        if not _signed(req.headers.get(HEADER), secret) or not CONTAINER_ID.fullmatch(cid):
            refused[0] += 1
            raise web.HTTPForbidden(text="the agent answers only to its run's harness, about hex container ids")
        async with engine.get(f"http://engine/containers/{cid}/json") as resp:
            info = await resp.json(content_type=None) if resp.status == 200 else {}
        labels = (info.get("Config") or {}).get("Labels") or {}
        if resp.status == 404 or not info:
            refused[0] += 1
            raise web.HTTPNotFound(text=f"no container {cid} on this node")
        if labels.get(RUN_LABEL) != run:
            refused[0] += 1
            raise web.HTTPForbidden(text=f"container {cid} is not of run {run}")
        return str(info["Id"])

    async def engine_post(req: web.Request, path: str) -> web.Response:
        cid = await of_this_run(req)
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
        cid = await of_this_run(req)
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
    await web.TCPSite(runner, overlay_address(harness), AGENT_PORT).start()
    await asyncio.to_thread(watch_harness, harness, grace)


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else ""
    if mode == "agent":
        asyncio.run(agent(argv[1], float(argv[2]), argv[3]))
    elif mode == "gateway":
        gateway(argv[1], float(argv[2]))
    elif mode == "launch":
        launch(argv[1])
    else:
        sys.exit(f"swarm_agent: unknown mode {mode!r} (agent, gateway, launch)")


if __name__ == "__main__":
    main(sys.argv[1:])
