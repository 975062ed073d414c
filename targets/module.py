"""One instance of a duplicated module m_i of the distributed design (paper section V-B, Figs 3 and 5).

Both instances of m_i receive every request with the whole accumulated state. The owner (by UUID rank of
the twins) works for t_i, forwards the state (P kB) to both instances of m_{i+1} (the last module tells the
BSS instead) and then tells its twin 'done' (p_c kB). The twin logs each request; when it stops hearing
heartbeats it runs every logged request that was not done. A module ignores a request it has already seen,
so a takeover that races a late forward does not run a task twice downstream.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from protocol.events import EventSink
from protocol.spec import ServiceSpec
from targets.http import Planes, read_json, signed, spend
from targets.membership import Membership, Replicated
from targets.spec import Params, task_name


class Module(Replicated):
    def __init__(self, spec: ServiceSpec, sink: EventSink) -> None:
        assert spec.task is not None and len(spec.peers) == 1, "a module has a task and exactly one twin"
        self.spec, self.sink, self.task = spec, sink, spec.task
        self.p = Params(spec.z)
        (self.twin, twin_addrs), = spec.peers.items()
        self.twin_state = twin_addrs["state"]
        self.members = Membership(spec.id, sink, self.p, {self.twin: twin_addrs["hb"]}, on_dead=self._twin_dead,
                                  secret=spec.secret)
        self.planes = Planes(sink, spec.bind, spec.ports, self.p.max_message)
        self.client, self.done_client = self.members.gated_client(), self.members.gated_client()
        self.seen: set[str] = set()
        self.log: set[str] = set()  # requests the twin owns and has not reported done
        self.running: dict[str, asyncio.Task] = {}
        self.loops: list[asyncio.Task] = []
        self.planes.route("op", "GET", "/health", self.health)
        self.planes.route("op", "POST", "/request", self.handle_work)
        self.route_heartbeats()
        self.planes.route("state", "POST", "/done", self.handle_done)

    async def start(self) -> None:
        await self.start_replica(role="module", task=self.task)

    async def stop(self) -> None:
        for task in [*self.loops, *self.running.values()]:
            task.cancel()
        await self.planes.stop()
        await asyncio.gather(self.client.close(), self.done_client.close(), self.members.close())

    async def handle_work(self, request: web.Request) -> web.Response:
        body, req, owner = await self.read_request(request)
        if req in self.seen:
            self.sink.emit("request_duplicate", req=req, task=self.task)
            return web.json_response({"accepted": False, "reason": "known"})
        self.seen.add(req)
        self.sink.emit("request_received", req=req, task=self.task, owner=owner, bytes=body["_bytes"])
        if owner == self.spec.id:
            self._run(req)
        else:
            self.log.add(req)
            self.sink.emit("request_logged", req=req, task=self.task, owner=owner)
        return web.json_response({"accepted": True, "owner": owner}, status=202)

    def _run(self, req: str) -> None:
        self.running[req] = asyncio.create_task(self.process(req))

    async def process(self, req: str) -> None:
        i = self.task
        try:
            self.sink.emit("task_start", req=req, task=i, name=task_name(i))
            await spend(self.p.t_i[i - 1], self.p.work)
            await self.members.at_end_of(req, i)  # a crash at the worst moment strikes here (membership)
            self.sink.emit("task_end", req=req, task=i, name=task_name(i))
            await self.forward(req)
            try:
                _, sent, _ = await self.done_client.post(self.twin_state, "/done", {"req": req, "by": self.spec.id},
                                                         self.p.done_bytes, timeout=max(5.0, 10 * self.p.t_h))
                self.sink.emit("done_sent", req=req, task=i, peer=self.twin, bytes=sent)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.sink.emit("done_failed", req=req, task=i, peer=self.twin, error=type(exc).__name__)
        finally:
            self.running.pop(req, None)

    async def forward(self, req: str) -> None:
        """The whole state to both instances of m_{i+1}; one live receiver is enough to go on."""
        if not self.spec.next:
            assert self.spec.bss
            await self.client.deliver(self.spec.bss, "/complete", {"req": req, "by": self.spec.id},
                                      headers=signed(self.spec.secret))
            self.sink.emit("request_completed", req=req, task=self.task)
            return
        size = self.p.hop_bytes[self.task]  # hop i carries the state into m_{i+1}
        while True:
            results = await asyncio.gather(*(self._post_work(addr, req, size) for addr in self.spec.next))
            if any(results):
                return
            await asyncio.sleep(0.05)  # neither instance of m_{i+1} answered: keep the workflow alive

    async def _post_work(self, addr: str, req: str, size: int) -> bool:
        try:
            _, sent, _ = await self.client.post(addr, "/request", {"req": req}, size, timeout=max(5.0, 10 * self.p.t_h))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.sink.emit("forward_failed", req=req, task=self.task, to=addr, error=type(exc).__name__)
            return False
        self.sink.emit("forward_sent", req=req, task=self.task, to=addr, bytes=sent)
        return True

    async def handle_done(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "by": str})
        self.log.discard(body["req"])
        self.sink.emit("done_received", req=body["req"], task=self.task, by=body["by"], bytes=body["_bytes"])
        return web.json_response({"ok": True})

    def _twin_dead(self, dead: str) -> None:
        for req in sorted(self.log):
            self.log.discard(req)
            self.sink.emit("takeover", req=req, task=self.task, dead=dead, from_task=self.task)
            self._run(req)
