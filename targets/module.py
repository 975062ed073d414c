"""One instance of a duplicated module m_i of the distributed design (paper section V-B, Figs 3 and 5).

Both instances of m_i receive every request with the whole accumulated state. The owner (by UUID rank of
the twins) works for t_i, forwards the state (P kB) to both instances of m_{i+1} (the last module tells the
BSS instead) and then tells its twin 'done' (p_c kB). The twin logs each request; when it stops hearing
heartbeats it runs every logged request that was not done. A module ignores a request it has already seen,
so a takeover that races a late forward does not run a task twice downstream.

With `mechanism: fenced` (this project's, docs/fencing.md) a hop's ownership is an epoch, as for the SLMs
(targets/fencing.py), decided by a majority of three: the twins and the chain's witness (targets/witness.py).
The owner confirms its epoch before it starts the task, again before the task's effect counts and whenever
its lease lapsed; the survivor takes over only once the twin and the witness granted it the next epoch; the
forward, the completion notice and 'done' carry the epoch, and the BSS refuses a stale or second completion.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from protocol.events import EventSink
from protocol.spec import ServiceSpec
from targets.fencing import Fence, Promise, Stale, completion_answer
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
        witness = spec.witness if self.p.mechanism == "fenced" else {}
        self.members = Membership(spec.id, sink, self.p, {self.twin: twin_addrs["hb"]}, on_dead=self._twin_dead,
                                  secret=spec.secret, watchers={witness["id"]: witness["hb"]} if witness else None)
        self.planes = Planes(sink, spec.bind, spec.ports, self.p.max_message)
        self.client, self.done_client = self.members.gated_client(), self.members.gated_client()
        self.seen: set[str] = set()
        self.log: set[str] = set()  # requests the twin owns and has not reported done
        self.finished: set[str] = set()  # forwarded here, or the twin said 'done'
        self.running: dict[str, asyncio.Task] = {}
        self.loops: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.planes.route("op", "GET", "/health", self.health)
        self.planes.route("op", "POST", "/request", self.handle_work)
        self.route_heartbeats()
        self.planes.route("state", "POST", "/done", self.handle_done)
        self.fence: Fence | None = None
        self.stamps: dict[str, str | None] = {}  # fenced: req -> the witness incarnation known at its receipt
        if witness:
            self.fence = Fence(spec.id, 3, sink, self.p.t_h, self.p.hb_interval, self.p.hb_bytes,
                               {self.twin: self.twin_state, witness["id"]: witness["state"]}, self.members.is_dead,
                               self.members.heard, lambda req: req in self.running, lambda req: req in self.finished,
                               self.members.gated_client(), tags=self._tags)
            self.members.on_ack = self.fence.lease.acked
            self.witness_id = witness["id"]
            self.planes.route("state", "POST", "/vote", self.fence.handle_vote)
            self.planes.route("state", "POST", "/confirm", self.fence.handle_confirm)
        self.claiming: set[str] = set()  # fenced: requests this instance is asking the majority for

    async def start(self) -> None:
        await self.start_replica(role="module", task=self.task)

    async def stop(self) -> None:
        for task in [*self.loops, *self.running.values(), *self._background]:
            task.cancel()
        await self.planes.stop()
        await asyncio.gather(self.client.close(), self.done_client.close(), self.members.close(),
                             *([self.fence.client.close()] if self.fence else []))

    def _tags(self, req: str) -> dict[str, Any]:
        """What a fenced ask of this hop carries for the witness: the hop, and the incarnation of the witness
        this instance knew when the request arrived (it answers only under that one, targets/witness.py)."""
        return {"task": self.task, "witness": self.stamps.get(req)}

    def _static(self, req: str) -> str:
        return self.members.static_owner(req)

    async def handle_work(self, request: web.Request) -> web.Response:
        body, req, owner = await self.read_request(request)
        if req in self.seen:
            self.sink.emit("request_duplicate", req=req, task=self.task)
            return web.json_response({"accepted": False, "reason": "known"})
        self.seen.add(req)
        epoch: dict[str, int] = {}
        if self.fence is not None:
            self.stamps[req] = self.members.watchers[self.witness_id].uuid
            promise = self.fence.received(req, self._static(req))
            owner, epoch = promise.owner, {"epoch": promise.epoch}
        self.sink.emit("request_received", req=req, task=self.task, owner=owner, bytes=body["_bytes"], **epoch)
        if owner == self.spec.id:
            self._run(req, epoch.get("epoch"))
        else:
            self.log.add(req)
            self.sink.emit("request_logged", req=req, task=self.task, owner=owner, **epoch)
            if self.fence is not None and self.members.is_dead(owner):
                self._claim(req, owner)
        return web.json_response({"accepted": True, "owner": owner}, status=202)

    def _run(self, req: str, epoch: int | None = None) -> None:
        self.running[req] = asyncio.create_task(self.process(req, epoch))

    async def _may_act(self, req: str, epoch: int | None) -> None:
        if self.fence is not None and epoch is not None:
            await self.fence.may_act(req, epoch, self._static(req))

    async def process(self, req: str, epoch: int | None = None) -> None:
        """Task i, the hop to m_{i+1} (or the completion) and 'done' to the twin; fenced (`epoch` given): the
        task starts, and its effect counts, only once this owner may act (`Fence.may_act`), and a stale owner
        steps down and logs the request under the newer one."""
        i = self.task
        fenced = {} if epoch is None else {"epoch": epoch}
        try:
            await self._may_act(req, epoch)
            self.sink.emit("task_start", req=req, task=i, name=task_name(i), **fenced)
            await spend(self.p.t_i[i - 1], self.p.work)
            await self.members.at_end_of(req, i)  # a crash at the worst moment strikes here (membership)
            await self._may_act(req, epoch)
            self.sink.emit("task_end", req=req, task=i, name=task_name(i), **fenced)
            await self.forward(req, epoch)
            self.finished.add(req)
            try:
                _, sent, _ = await self.done_client.post(self.twin_state, "/done",
                                                         {"req": req, "by": self.spec.id, **fenced},
                                                         self.p.done_bytes, timeout=max(5.0, 10 * self.p.t_h))
                self.sink.emit("done_sent", req=req, task=i, peer=self.twin, bytes=sent)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.sink.emit("done_failed", req=req, task=i, peer=self.twin, error=type(exc).__name__)
        except Stale as exc:
            assert self.fence is not None
            newer = Promise(exc.promise.epoch, exc.promise.owner or self.twin)
            if newer.epoch > self.fence.promise(req, self._static(req)).epoch:
                self.fence.promises[req] = newer
            self.sink.emit("stepped_down", req=req, task=i, epoch=epoch, newer=newer.epoch, owner=newer.owner)
            if req not in self.finished:
                self.log.add(req)  # the newer owner's to finish; ours to take over again should it die
                if self.members.is_dead(newer.owner):  # it died already: no later death will call _twin_dead
                    self._claim(req, newer.owner)
        finally:
            self.running.pop(req, None)

    async def forward(self, req: str, epoch: int | None = None) -> None:
        """The whole state to both instances of m_{i+1}; one live receiver is enough to go on. The last module
        tells the BSS, which (fenced) refuses a stale epoch (`Stale`) or a second completion (`already`)."""
        fenced = {} if epoch is None else {"epoch": epoch}
        if not self.spec.next:
            assert self.spec.bss
            reply = await self.client.deliver(self.spec.bss, "/complete", {"req": req, "by": self.spec.id, **fenced},
                                              headers=signed(self.spec.secret),
                                              before=lambda: self._may_act(req, epoch))
            self.sink.emit("request_completed", req=req, task=self.task, **fenced, **completion_answer(reply))
            return
        size = self.p.hop_bytes[self.task]  # hop i carries the state into m_{i+1}
        while True:
            await self._may_act(req, epoch)
            results = await asyncio.gather(*(self._post_work(addr, req, size, fenced) for addr in self.spec.next))
            if any(results):
                return
            await asyncio.sleep(0.05)  # neither instance of m_{i+1} answered: keep the workflow alive

    async def _post_work(self, addr: str, req: str, size: int, fenced: dict[str, int]) -> bool:
        try:
            _, sent, _ = await self.client.post(addr, "/request", {"req": req, **fenced}, size,
                                                timeout=max(5.0, 10 * self.p.t_h))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.sink.emit("forward_failed", req=req, task=self.task, to=addr, error=type(exc).__name__)
            return False
        self.sink.emit("forward_sent", req=req, task=self.task, to=addr, bytes=sent)
        return True

    async def handle_done(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "by": str})
        req = body["req"]
        if self.fence is not None:
            self.fence.done_by(req, self._static(req), body.get("epoch"), body["by"])
        self.log.discard(req)
        self.finished.add(req)
        self.sink.emit("done_received", req=req, task=self.task, by=body["by"], bytes=body["_bytes"])
        return web.json_response({"ok": True})

    def _twin_dead(self, dead: str) -> None:
        """Take over every logged request of the twin (fenced: each once the majority granted it, `_claim`)."""
        if self.fence is not None:
            for req in sorted(self.log):
                if self.fence.promise(req, self._static(req)).owner == dead:
                    self._claim(req, dead)
            return
        for req in sorted(self.log):
            self.log.discard(req)
            self.sink.emit("takeover", req=req, task=self.task, dead=dead, from_task=self.task)
            self._run(req)

    def _claim(self, req: str, dead: str) -> None:
        if req not in self.claiming:
            self.claiming.add(req)
            self._spawn(self._take_over(req, dead))

    async def _take_over(self, req: str, dead: str) -> None:
        """Win the next epoch of this hop of `req` from the twin and the witness, then redo the task."""
        assert self.fence is not None
        try:
            epoch = await self.fence.elect(req, self._static(req),
                                           lambda: req in self.log and req not in self.finished)
        finally:
            self.claiming.discard(req)
        if epoch is None and req in self.fence.done:
            self.log.discard(req)
            self.finished.add(req)
        if epoch is None or req not in self.log:
            return
        self.log.discard(req)
        self.sink.emit("takeover", req=req, task=self.task, dead=dead, from_task=self.task, epoch=epoch)
        self._run(req, epoch)
