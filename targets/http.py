"""HTTP/JSON plumbing shared by every service: three planes on three ports, guarded handlers, padded bodies.

Why HTTP/1.1 + JSON: it is what MANO microservices (SONATA, OSM) actually speak, it can be read with curl,
status codes give malformed input a standard answer (400/413), and keep-alive TCP connections pass through
a plain TCP latency proxy unchanged. Each plane (op, hb, state) has its own port, so bytes seen on the wire
can be attributed to B_op or B_rel by port alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from protocol import auth
from protocol.bus import on_bus
from protocol.events import EventSink
from protocol.messages import padded
from protocol.spec import address
from targets import transport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadMessage(web.HTTPBadRequest):
    """A message that parses but breaks the protocol: answered 400, recorded, never fatal."""


class Refused(web.HTTPForbidden):
    """A control request without this instance's key: answered 403 and counted, never recorded as an event
    (whoever sent it must not be able to write into the run's history)."""


def require(request: web.Request, expected: str | None) -> None:
    """403 (`Refused`) unless the request carries the `expected` key in `auth.HEADER` (docs/security.md)."""
    headers = getattr(request, "headers", None) or {}
    if not auth.matches(expected, headers.get(auth.HEADER)):
        raise Refused(text="this instance answers only to its run's harness")


def signed(secret: str | None) -> dict[str, str]:
    """The header that proves a message is this instance's own (its key), or none when started by hand."""
    return {auth.HEADER: secret} if secret else {}


async def read_json(request: web.Request, required: dict[str, type]) -> dict[str, Any]:
    """The JSON object in the request body with the required fields of the right types, or 400."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadMessage(text="body is not JSON") from None
    if not isinstance(body, dict):
        raise BadMessage(text="body is not a JSON object")
    for key, kind in required.items():
        if not isinstance(body.get(key), kind) or (isinstance(body.get(key), bool) and kind is int):
            raise BadMessage(text=f"field {key!r} missing or not {kind.__name__}")
    body["_bytes"] = len(raw)
    return body


def guarded(sink: EventSink, plane: str, refusals: list[int] | None = None) -> Callable[..., Any]:
    """Middleware: 4xx answers are recorded as `bad_message`, except a 403 `Refused`, which is only counted
    (in `refusals[0]`); a handler bug answers 500 and is recorded."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused:
            if refusals is not None:
                refusals[0] += 1
            raise
        except web.HTTPException as exc:
            if 400 <= exc.status < 500:
                sink.emit("bad_message", plane=plane, path=request.path, status=exc.status, reason=exc.text)
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # a bug must not take the service down: answer and record it
            sink.emit("error", plane=plane, path=request.path, error=repr(exc))
            raise web.HTTPInternalServerError(text="internal error") from None

    return middleware


class Planes:
    """The three listening planes of one service; `start` binds exactly the addresses it is given."""

    def __init__(self, sink: EventSink, bind: str, ports: dict[str, int], max_message: int) -> None:
        self.sink, self.bind, self.ports = sink, bind, ports
        self.refusals = [0]  # requests answered 403 for want of the instance's key (reported when it stops)
        self.apps = {
            plane: web.Application(client_max_size=max_message, middlewares=[guarded(sink, plane, self.refusals)])
            for plane in ports
        }
        self.runners: list[web.AppRunner] = []
        self.routes: list[tuple[str, str, str, Handler]] = []  # also served on the bus (targets.transport)

    def route(self, plane: str, method: str, path: str, handler: Handler) -> None:
        self.apps[plane].router.add_route(method, path, handler)
        self.routes.append((plane, method, path, handler))

    async def start(self) -> None:
        for plane, app in self.apps.items():
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, self.bind, self.ports[plane], reuse_address=True).start()
            self.runners.append(runner)
        bus = transport.current()
        if bus is not None:
            await bus.serve(self.routes)

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


class Client:
    """Keep-alive HTTP client for one plane: posts padded JSON, reports body bytes both ways."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            json_serialize=json.dumps,
            auto_decompress=False,
        )

    async def post(self, addr: str, path: str, body: dict[str, Any], size: int, timeout: float,
                   headers: dict[str, str] | None = None) -> tuple[dict[str, Any], int, int]:
        """POST `body` padded to `size` bytes; returns (reply JSON, bytes sent, bytes received). A `bus:`
        address goes by the process's transport instead (targets.transport). `headers`: extra ones (`signed`:
        only ever to the BSS, so no peer learns this instance's key)."""
        bus = transport.current() if on_bus(addr) else None
        if bus is not None:
            return await bus.post(addr, path, body, size, timeout)
        data = padded(body, size)
        host, port = address(addr)
        async with self.session.post(
            f"http://{host}:{port}{path}", data=data, headers={"Content-Type": "application/json", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=raw[:200].decode())
            return (json.loads(raw) if raw else {}), len(data), len(raw)

    async def deliver(self, addr: str, path: str, body: dict[str, Any], size: int = 0,
                      backoff: float = 0.05, headers: dict[str, str] | None = None,
                      before: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
        """POST until it is acknowledged, for messages that must never be dropped (completion notices); the
        answer. `before` runs before every attempt (a fenced owner confirms it may still act: a retry after its
        lease lapsed must not count)."""
        while True:
            if before is not None:
                await before()
            try:
                reply, _, _ = await self.post(addr, path, body, size, timeout=10, headers=headers)
                return reply
            except (TimeoutError, aiohttp.ClientError, OSError):
                await asyncio.sleep(backoff)

    async def close(self) -> None:
        await self.session.close()


def _burn(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    block = b"manobench" * 64
    while time.perf_counter() < deadline:
        block = hashlib.sha256(block).digest() * 18


async def spend(seconds: float, mode: str) -> None:
    """Emulated work: sleep, or burn CPU (in a thread, so heartbeats keep flowing) so CPU figures mean something."""
    if seconds <= 0:
        return
    if mode == "burn":
        await asyncio.to_thread(_burn, seconds)
    else:
        await asyncio.sleep(seconds)
