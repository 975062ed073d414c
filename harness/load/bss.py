"""The BSS: the source of instantiation requests and the sink of completion notices (harness side).

It submits each request (a fresh UUID) to every entry point of the design and records `submitted` and
`completed` events in the history. A workflow completed twice is recorded twice: the checker reports it as
a duplicate, it is never merged here. A completion notice counts only with its sender's key (docs/security.md).
A notice that carries an `epoch` (the fenced mechanism, docs/fencing.md) is checked as a fenced resource:
one of an epoch below the highest the BSS saw for the request, or any after the request was completed, is
answered `{"ok": true, "refused": "stale"|"already", "epoch": E}` and recorded as `completion_refused`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

import aiohttp
from aiohttp import web

from harness.history import Collector
from protocol import auth
from protocol.messages import fenced_refusal, padded


class Bss:
    def __init__(self, collector: Collector, host: str = "127.0.0.1", port: int = 0, secret: str | None = None
                 ) -> None:
        """`secret`: the run's secret; a /complete must then carry its sender's key (`protocol.auth`), else it
        is answered 403 and counted in `refused`, never recorded."""
        self.collector, self.host, self.port = collector, host, port
        self.secret = secret
        self.refused = 0
        self.entry: list[str] = []
        self.entry_bytes = 0  # the distributed chain's hop 0 carries P_{0,1} kB of state
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.completions: dict[str, int] = {}
        self.epochs: dict[str, int] = {}  # req -> highest epoch of a completion notice (fenced)
        self.warm: set[str] = set()  # warm-up requests: marked in the history, left out by the checker
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/complete", self._complete)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()
        return self.address

    async def _complete(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        try:
            body = await request.json()
            req, by = str(body["req"]), str(body.get("by", "?"))
        except (ValueError, KeyError, TypeError):
            req, by = "", None
        if self.secret is not None and (by is None or not auth.matches(auth.key(self.secret, by),
                                                                      request.headers.get(auth.HEADER))):
            self.refused += 1  # not from a service of this run: counted, never in the history
            raise web.HTTPForbidden(text="completion notices are taken from the run's services only")
        if by is None:
            self.collector.emit("bss", "bad_message", path="/complete")
            raise web.HTTPBadRequest(text="expected {req, by}")
        warm = {"warmup": True} if req in self.warm else {}
        epoch = body.get("epoch")
        fenced: dict[str, int] = {}
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            refused = fenced_refusal(self.epochs.get(req, 0), epoch, req in self.completions)
            self.epochs[req] = max(self.epochs.get(req, 0), epoch)
            if refused is not None:
                self.collector.emit("bss", "completion_refused", req=req, by=by, epoch=epoch, reason=refused, **warm)
                return web.json_response({"ok": True, "refused": refused, "epoch": self.epochs[req]})
            fenced = {"epoch": epoch}
        self.completions[req] = self.completions.get(req, 0) + 1
        self.collector.emit("bss", "completed", req=req, by=by, n=self.completions[req], **warm, **fenced)
        future = self.waiting.get(req)
        if future and not future.done():
            future.set_result(now)
        return web.json_response({"ok": True})

    async def submit(self, req: str | None = None, *, warmup: bool = False) -> str:
        """Send one request to every entry point; at least one must accept it (retried until one does)."""
        assert self._session is not None, "start() first"
        req = req or str(uuid.uuid4())
        self.waiting[req] = asyncio.get_running_loop().create_future()
        if warmup:
            self.warm.add(req)
        self.collector.emit("bss", "submitted", req=req, to=len(self.entry), **({"warmup": True} if warmup else {}))
        while True:
            results = await asyncio.gather(*(self._post(addr, req) for addr in self.entry))
            if any(results):
                return req
            await asyncio.sleep(0.05)

    async def _post(self, addr: str, req: str) -> bool:
        assert self._session is not None
        try:
            async with self._session.post(f"http://{addr}/request", data=padded({"req": req}, self.entry_bytes),
                                          headers={"Content-Type": "application/json"},
                                          timeout=aiohttp.ClientTimeout(total=10)) as resp:
                await resp.read()
                return resp.status < 400
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def wait(self, req: str, timeout: float) -> float:
        """Completion time (monotonic) of `req`, waiting up to `timeout` seconds."""
        return await asyncio.wait_for(asyncio.shield(self.waiting[req]), timeout)

    async def drive(self, count: int, users: int, timeout: float, *, warmup: bool = False) -> list[str]:
        """Closed-loop load: `users` concurrent users each submit and wait, until `count` were submitted;
        `warmup`: these are warm-up workflows, marked as such in the history."""
        submitted: list[str] = []
        lock = asyncio.Lock()

        async def user() -> None:
            while True:
                async with lock:
                    if len(submitted) >= count:
                        return
                    req = str(uuid.uuid4())
                    submitted.append(req)
                await self.submit(req, warmup=warmup)
                try:
                    await self.wait(req, timeout)
                except TimeoutError:
                    return

        await asyncio.gather(*(user() for _ in range(max(1, users))))
        return submitted

    async def wait_all(self, reqs: Iterable[str], timeout: float) -> None:
        pending = [self.waiting[r] for r in reqs if not self.waiting[r].done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def close(self) -> None:
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()
