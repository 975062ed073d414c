"""A worker microservice m_i (Catalogue, Resource Manager, Placement Manager, ...) of the centralised design.

It gets a task with its slice of the state (P_a kB), works for t_i (sleep, or burn CPU with `work: burn`)
and answers P_b kB. Task calls are idempotent: a survivor SLM may call the same task again after a
takeover, and each execution is recorded, so the checker can count re-executed work.

Fenced (`mechanism: fenced`, targets/fencing.py) a call carries its owner's epoch: the worker remembers the
highest epoch it has seen per request and refuses a lower one (`task_fenced`, answered `{"fenced": true,
"seen": E}`), so an owner that a later one replaced cannot apply the task's effect after the newer owner did.
A second call of the same epoch (the owner's retry after a reply lost with the broker, a redelivery) gets the
first execution's reply, awaited if it is still running, and the effect is not applied again
(`task_repeated`): a task's effect at most once per request epoch at each replica.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from aiohttp import web

from protocol.events import EventSink
from protocol.messages import padded
from protocol.spec import ServiceSpec
from targets.http import Planes, read_json, spend
from targets.spec import Params, task_name

EPOCHS_KEPT = 65536  # requests whose highest epoch a worker remembers (the oldest forgotten first)


class Worker:
    def __init__(self, spec: ServiceSpec, sink: EventSink) -> None:
        assert spec.task is not None, "a worker needs its task number"
        self.spec, self.sink, self.task = spec, sink, spec.task
        self.p = Params(spec.z)
        self.planes = Planes(sink, spec.bind, {"op": spec.ports["op"]}, self.p.max_message)
        self.planes.route("op", "GET", "/health", self.health)
        self.planes.route("op", "POST", "/task", self.handle_task)
        self.epochs: OrderedDict[str, int] = OrderedDict()  # req -> highest epoch seen (fenced)
        self.replies: dict[tuple[str, int], asyncio.Future[bytes]] = {}  # (req, epoch) -> its execution's reply

    async def start(self) -> None:
        await self.planes.start()
        self.sink.emit("started", role="worker", task=self.task)

    async def stop(self) -> None:
        await self.planes.stop()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "id": self.spec.id})

    async def handle_task(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "task": int})
        if body["task"] != self.task:
            raise web.HTTPBadRequest(text=f"this worker does task {self.task}, not {body['task']}")
        req, i = body["req"], self.task
        epoch = body.get("epoch")
        fenced: dict[str, int] = {}
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            seen = self.epochs.get(req, 0)
            if epoch < seen:
                self.sink.emit("task_fenced", req=req, task=i, epoch=epoch, seen=seen)
                return web.json_response({"fenced": True, "seen": seen})
            first = self.replies.get((req, epoch))
            if first is not None:
                self.sink.emit("task_repeated", req=req, task=i, epoch=epoch)
                return web.Response(body=await asyncio.shield(first), content_type="application/json")
            self.epochs[req] = epoch
            self.epochs.move_to_end(req)
            if len(self.epochs) > EPOCHS_KEPT:
                old, _ = self.epochs.popitem(last=False)
                for key in [key for key in self.replies if key[0] == old]:
                    del self.replies[key]
            self.replies[(req, epoch)] = asyncio.get_running_loop().create_future()
            fenced = {"epoch": epoch}
        self.sink.emit("task_start", req=req, task=i, name=task_name(i), bytes_in=body["_bytes"], **fenced)
        try:
            await spend(self.p.t_i[i - 1], self.p.work)
        except BaseException:  # not applied after all: a repeat of this call must do the work
            undone = self.replies.pop((req, fenced["epoch"]), None) if fenced else None
            if undone is not None:
                undone.cancel()
            raise
        reply = padded({"req": req, "task": i, "by": self.spec.id}, self.p.p_b[i - 1])
        self.sink.emit("task_end", req=req, task=i, name=task_name(i), bytes_out=len(reply), **fenced)
        pending = self.replies.get((req, fenced["epoch"])) if fenced else None
        if pending is not None and not pending.done():
            pending.set_result(reply)
        return web.Response(body=reply, content_type="application/json")
