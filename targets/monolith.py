"""The monolith: every task in one process, no network between tasks and no reliability mechanism.

It is the paper's reference for t_m (R_a = t_c / t_m): a request runs tasks 1..n back to back, then the
BSS is told. A crash loses the request; that is the point of the comparison.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from protocol.events import EventSink
from protocol.spec import ServiceSpec
from targets.http import Client, Planes, read_json, signed, spend
from targets.spec import Params, task_name


class Monolith:
    def __init__(self, spec: ServiceSpec, sink: EventSink) -> None:
        self.spec, self.sink = spec, sink
        self.p = Params(spec.z)
        self.planes = Planes(sink, spec.bind, {"op": spec.ports["op"]}, self.p.max_message)
        self.planes.route("op", "GET", "/health", self.health)
        self.planes.route("op", "POST", "/request", self.handle_request)
        self.client = Client()
        self.known: set[str] = set()
        self.running: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.planes.start()
        self.sink.emit("started", role="monolith")

    async def stop(self) -> None:
        for task in list(self.running):
            task.cancel()
        await self.planes.stop()
        await self.client.close()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "id": self.spec.id})

    async def handle_request(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str})
        req = body["req"]
        if req in self.known:
            self.sink.emit("request_duplicate", req=req)
            return web.json_response({"accepted": False, "reason": "known"})
        self.known.add(req)
        self.sink.emit("request_received", req=req, owner=self.spec.id, bytes=body["_bytes"])
        task = asyncio.create_task(self.workflow(req))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return web.json_response({"accepted": True, "owner": self.spec.id}, status=202)

    async def workflow(self, req: str) -> None:
        for i in range(1, self.p.n + 1):
            self.sink.emit("task_start", req=req, task=i, name=task_name(i))
            await spend(self.p.t_i[i - 1], self.p.work)
            self.sink.emit("task_end", req=req, task=i, name=task_name(i))
        assert self.spec.bss
        await self.client.deliver(self.spec.bss, "/complete", {"req": req, "by": self.spec.id},
                                  headers=signed(self.spec.secret))
        self.sink.emit("request_completed", req=req)
