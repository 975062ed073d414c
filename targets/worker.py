"""A worker microservice m_i (Catalogue, Resource Manager, Placement Manager, ...) of the centralised design.

It gets a task with its slice of the state (P_a kB), works for t_i (sleep, or burn CPU with `work: burn`)
and answers P_b kB. Task calls are idempotent: a survivor SLM may call the same task again after a
takeover, and each execution is recorded, so the checker can count re-executed work.

Fenced (`mechanism: fenced`, targets/fencing.py) a call carries its owner's epoch: the worker remembers the
highest epoch it has seen per request and refuses a lower one (`task_fenced`, answered `{"fenced": true,
"seen": E}`), so an owner that a later one replaced cannot apply the task's effect after the newer owner did.
The epoch is checked twice: when the call arrives, and again when the work is done, just before its effect
counts (`task_end`): a call of an old owner that was already running when a later epoch's call arrived is
refused then, its effect never applied. A second call of the same epoch (the owner's retry after a reply lost
with the broker, a redelivery) gets the first execution's answer, awaited if it is still running, and the
effect is not applied again (`task_repeated`): a task's effect at most once per request epoch at each replica.
What a worker keeps per request is the highest epoch and the epochs it applied (a reply is made again from
them: it is deterministic), for the EPOCHS_KEPT most recent requests.
"""

from __future__ import annotations

import asyncio
import json
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
        self.applied: dict[str, set[int]] = {}  # req -> the epochs whose effect was applied here (fenced)
        self.running: dict[tuple[str, int], asyncio.Future[bytes]] = {}  # (req, epoch) -> its answer, once done

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
        req, epoch = body["req"], body.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):  # the paper's mechanisms: no epoch
            await self._work(req, body["_bytes"])
            return self._answer(self._reply(req))
        return self._answer(await self._fenced_task(req, epoch, body["_bytes"]))

    async def _fenced_task(self, req: str, epoch: int, bytes_in: int) -> bytes:
        """A call under `epoch`: refused below the highest epoch seen (on arrival, and again once the work is
        done, before its effect counts), answered from the first execution when repeated."""
        seen = self.epochs.get(req, 0)
        if epoch < seen:
            return self._refuse(req, epoch, seen)
        running = self.running.get((req, epoch))
        if running is not None or epoch in self.applied.get(req, ()):
            self.sink.emit("task_repeated", req=req, task=self.task, epoch=epoch)
            return await asyncio.shield(running) if running is not None else self._reply(req)
        self.epochs[req] = epoch
        self.epochs.move_to_end(req)
        if len(self.epochs) > EPOCHS_KEPT:
            old, _ = self.epochs.popitem(last=False)
            self.applied.pop(old, None)
        pending = self.running[(req, epoch)] = asyncio.get_running_loop().create_future()
        try:
            answer = await self._work(req, bytes_in, epoch)
        except BaseException:  # not applied after all: a repeat of this call must do the work
            self.running.pop((req, epoch), None)
            pending.cancel()
            raise
        self.running.pop((req, epoch), None)
        pending.set_result(answer)
        return answer

    async def _work(self, req: str, bytes_in: int, epoch: int | None = None) -> bytes:
        """t_i of work, then the effect (`task_end`); fenced, only if no later epoch arrived meanwhile."""
        fenced = {} if epoch is None else {"epoch": epoch}
        self.sink.emit("task_start", req=req, task=self.task, name=task_name(self.task), bytes_in=bytes_in, **fenced)
        await spend(self.p.t_i[self.task - 1], self.p.work)
        if epoch is not None:
            seen = self.epochs.get(req, 0)
            if epoch < seen:  # a later owner called meanwhile: this effect must not count
                return self._refuse(req, epoch, seen)
            self.applied.setdefault(req, set()).add(epoch)
        reply = self._reply(req)
        self.sink.emit("task_end", req=req, task=self.task, name=task_name(self.task), bytes_out=len(reply),
                       **fenced)
        return reply

    def _reply(self, req: str) -> bytes:
        """The answer to a call of task i for `req`: the same bytes every time (P_b kB)."""
        return padded({"req": req, "task": self.task, "by": self.spec.id}, self.p.p_b[self.task - 1])

    def _refuse(self, req: str, epoch: int, seen: int) -> bytes:
        self.sink.emit("task_fenced", req=req, task=self.task, epoch=epoch, seen=seen)
        return json.dumps({"fenced": True, "seen": seen}).encode()

    @staticmethod
    def _answer(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="application/json")
