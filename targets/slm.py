"""The centralised design's orchestrator (SLM), k >= 2 instances (paper section V-A, Figs 2 and 4).

Every SLM receives every request. The owner (by UUID rank, see `membership`) runs the workflow: before
each task and once at the end it spends t_o of orchestrator processing, calls worker m_i with P_a kB and
gets P_b kB back. The others log the request. After task s_o and then every s_p tasks the owner sends its
accumulated state (s_z kB) to every peer, so that when it is declared dead the new owner resumes from the
last task it heard of instead of from the start. With `mechanism: restart` there is no state sharing: a
survivor restarts from task 1, like a replication controller would (the baseline the paper argues against).
With `mechanism: fenced` (this project's, targets/fencing.py, docs/fencing.md) the state is shared as with
state sharing, but a request's ownership is an epoch that changes hands only through a majority of the k
SLMs, the owner acts only under a lease from that majority, and every message that acts carries the epoch.
When a workflow completes the owner tells the BSS, then sends each peer a small 'done' (p_c kB) so they
drop it from their log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from protocol.bus import task_call_timeout
from protocol.events import EventSink
from protocol.spec import ServiceSpec
from targets.fencing import Fence, Promise, Stale, completion_answer
from targets.http import Planes, read_json, signed, spend
from targets.membership import Membership, Replicated
from targets.spec import Params, task_name

RETRY_BACKOFF = 0.05  # wall seconds between attempts at an unreachable worker or BSS


@dataclass
class LogEntry:
    """What a non-owner knows of a request a peer processes."""

    owner: str
    last_task: int = 0  # last task whose state was shared with us (0: none)


class Slm(Replicated):
    def __init__(self, spec: ServiceSpec, sink: EventSink) -> None:
        self.spec, self.sink = spec, sink
        self.p = Params(spec.z)
        self.members = Membership(spec.id, sink, self.p, {pid: a["hb"] for pid, a in spec.peers.items()},
                                  on_dead=self._peer_dead, secret=spec.secret)
        self.planes = Planes(sink, spec.bind, spec.ports, self.p.max_message)
        self.op, self.state_client = self.members.gated_client(), self.members.gated_client()
        self.log: dict[str, LogEntry] = {}
        self.running: dict[str, asyncio.Task] = {}
        self.finished: set[str] = set()  # completed here, or a peer said 'done'
        self.preferred: dict[int, int] = {}  # task -> replica that answered last (sticky fail-over)
        self.loops: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.planes.route("op", "GET", "/health", self.health)
        self.planes.route("op", "POST", "/request", self.handle_request)
        self.route_heartbeats()
        self.planes.route("state", "POST", "/state", self.handle_state)
        self.planes.route("state", "POST", "/done", self.handle_done)
        self.fence: Fence | None = None
        if self.p.mechanism == "fenced":
            self.fence = Fence(spec.id, self.p.k, sink, self.p.t_h, self.p.hb_interval, self.p.hb_bytes,
                               {pid: a["state"] for pid, a in spec.peers.items()}, self.members.is_dead,
                               self.members.heard, lambda req: req in self.running, lambda req: req in self.finished,
                               self.members.gated_client())
            self.members.on_ack = self.fence.lease.acked
            self.planes.route("state", "POST", "/vote", self.fence.handle_vote)
            self.planes.route("state", "POST", "/confirm", self.fence.handle_confirm)
        self.claiming: set[str] = set()  # fenced: requests this SLM is asking the majority for

    # --- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.start_replica(role="slm", k=self.p.k)

    async def stop(self) -> None:
        for task in [*self.loops, *self.running.values(), *self._background]:
            task.cancel()
        await self.planes.stop()
        await asyncio.gather(self.op.close(), self.state_client.close(), self.members.close(),
                             *([self.fence.client.close()] if self.fence else []))

    # --- requests -----------------------------------------------------------------------------------------
    async def handle_request(self, request: web.Request) -> web.Response:
        body, req, owner = await self.read_request(request)
        if req in self.finished or req in self.running or req in self.log:
            self.sink.emit("request_duplicate", req=req)
            return web.json_response({"accepted": False, "reason": "known"}, status=200)
        if self.fence is not None:
            promise = self.fence.received(req, self.members.static_owner(req))
            owner, epoch = promise.owner, {"epoch": promise.epoch}
        else:
            epoch = {}
        self.sink.emit("request_received", req=req, owner=owner, bytes=body["_bytes"], **epoch)
        if owner == self.spec.id:
            self._run(req, first_task=1, epoch=epoch.get("epoch"))
        else:
            self.log[req] = LogEntry(owner)
            self.sink.emit("request_logged", req=req, owner=owner, **epoch)
            if self.fence is not None and self.members.is_dead(owner):
                self._claim(req, owner)
        return web.json_response({"accepted": True, "owner": owner}, status=202)

    def _run(self, req: str, first_task: int, epoch: int | None = None) -> None:
        self.running[req] = asyncio.create_task(self.workflow(req, first_task, epoch))

    async def workflow(self, req: str, first_task: int, epoch: int | None = None) -> None:
        """Tasks first_task..n with t_o before each and once at the end (Eq 2's (n + 1) t_o); fenced (`epoch`
        given): each step only once this owner may act (`_may_act`), and it steps down when fenced."""
        try:
            for i in range(first_task, self.p.n + 1):
                await self._think(req, epoch)
                await self.call_task(req, i, epoch)
                if self.p.share_after(i):
                    self._spawn(self.share_state(req, i, epoch))
            await self._think(req, epoch)
            await self.complete(req, epoch)
        except Stale as exc:
            self.sink.emit("stepped_down", req=req, epoch=epoch, newer=exc.promise.epoch, owner=exc.promise.owner)
            self.log[req] = LogEntry(exc.promise.owner or self.members.owner_of(req))
        finally:
            self.running.pop(req, None)

    async def _think(self, req: str, epoch: int | None) -> None:
        """t_o of orchestrator processing; fenced, the check that this owner may act runs meanwhile (one round
        trip of 2 l_hb at most, hidden in t_o where it is shorter) and again, at once, after it."""
        if epoch is None:
            await spend(self.p.t_o, self.p.work)
            return
        await asyncio.gather(spend(self.p.t_o, self.p.work), self._may_act(req, epoch))
        await self._may_act(req, epoch)

    async def _may_act(self, req: str, epoch: int | None) -> None:
        if self.fence is not None and epoch is not None:
            await self.fence.may_act(req, epoch, self.members.static_owner(req))

    async def call_task(self, req: str, i: int, epoch: int | None = None) -> None:
        """Call m_i (any live replica), retrying until one answers: a workflow is never dropped. Fenced, the call
        carries the epoch and a worker that saw a later one refuses it (`Stale`)."""
        replicas = self.spec.workers[i - 1]
        attempt = 0
        fenced = {} if epoch is None else {"epoch": epoch}
        while True:
            replica = (self.preferred.get(i, 0) + attempt) % len(replicas)
            addr = replicas[replica]
            await self._may_act(req, epoch)
            self.sink.emit("task_call", req=req, task=i, name=task_name(i), worker=addr, attempt=attempt, **fenced)
            try:
                reply, sent, got = await self.op.post(addr, "/task", {"req": req, "task": i, **fenced},
                                                      self.p.p_a[i - 1],
                                                      timeout=task_call_timeout(self.p.t_i[i - 1], self.p.scale))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.sink.emit("task_call_failed", req=req, task=i, worker=addr, error=type(exc).__name__)
                attempt += 1
                await asyncio.sleep(RETRY_BACKOFF if attempt % len(replicas) == 0 else 0)
                continue
            if reply.get("fenced") and isinstance(reply.get("seen"), int):
                raise Stale(Promise(reply["seen"], ""))
            await self.members.at_end_of(req, i)  # a crash at the worst moment strikes here (membership)
            await self._may_act(req, epoch)
            self.sink.emit("task_reply", req=req, task=i, name=task_name(i), worker=addr, bytes_out=sent,
                           bytes_in=got, **fenced)
            self.preferred[i] = replica
            return

    async def share_state(self, req: str, task: int, epoch: int | None = None) -> None:
        """Send the accumulated state to every live peer; recorded per peer once it acknowledged."""
        fenced = {} if epoch is None else {"epoch": epoch}
        for pid, addrs in self.spec.peers.items():
            if self.members.peers[pid].dead:
                continue
            try:
                _, sent, _ = await self.state_client.post(
                    addrs["state"], "/state", {"req": req, "owner": self.spec.id, "last_task": task, **fenced},
                    self.p.state_bytes, timeout=max(5.0, 10 * self.p.t_h))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.sink.emit("state_share_failed", req=req, task=task, peer=pid, error=type(exc).__name__)
                continue
            self.sink.emit("state_share_sent", req=req, task=task, peer=pid, bytes=sent, **fenced)

    async def complete(self, req: str, epoch: int | None = None) -> None:
        """Tell the BSS (retrying: a completion is never dropped), then tell the peers 'done'. Fenced, the BSS
        refuses a stale epoch (this owner steps down) or a second completion (already done by an earlier owner)."""
        assert self.spec.bss
        fenced = {} if epoch is None else {"epoch": epoch}
        reply = await self.op.deliver(self.spec.bss, "/complete", {"req": req, "by": self.spec.id, **fenced},
                                      backoff=RETRY_BACKOFF, headers=signed(self.spec.secret),
                                      before=lambda: self._may_act(req, epoch))
        already = completion_answer(reply)
        self.finished.add(req)
        self.sink.emit("request_completed", req=req, **fenced, **already)
        for pid, addrs in self.spec.peers.items():
            if not self.members.peers[pid].dead:
                self._spawn(self.send_done(req, pid, addrs["state"], epoch))

    async def send_done(self, req: str, pid: str, addr: str, epoch: int | None = None) -> None:
        fenced = {} if epoch is None else {"epoch": epoch}
        try:
            _, sent, _ = await self.state_client.post(addr, "/done", {"req": req, "by": self.spec.id, **fenced},
                                                      self.p.done_bytes, timeout=max(5.0, 10 * self.p.t_h))
            self.sink.emit("done_sent", req=req, peer=pid, bytes=sent)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.sink.emit("done_failed", req=req, peer=pid, error=type(exc).__name__)

    # --- state plane --------------------------------------------------------------------------------------
    async def handle_state(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "owner": str, "last_task": int})
        req, task = body["req"], body["last_task"]
        if not 1 <= task <= self.p.n:
            raise web.HTTPBadRequest(text=f"last_task {task} outside 1..{self.p.n}")
        epoch = body.get("epoch")
        behind = self.fence is not None and isinstance(epoch, int) and epoch < self.fence.promise(
            req, self.members.static_owner(req)).epoch
        if req in self.running or req in self.finished or behind:
            self.sink.emit("state_share_stale", req=req, task=task, owner=body["owner"])
            return web.json_response({"ok": False})
        entry = self.log.setdefault(req, LogEntry(body["owner"]))
        entry.owner, entry.last_task = body["owner"], max(entry.last_task, task)
        self.sink.emit("state_share_received", req=req, task=task, owner=body["owner"], bytes=body["_bytes"])
        return web.json_response({"ok": True})

    async def handle_done(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "by": str})
        if self.fence is not None:
            self.fence.done_by(body["req"], self.members.static_owner(body["req"]), body.get("epoch"), body["by"])
        self.log.pop(body["req"], None)
        self.finished.add(body["req"])
        self.sink.emit("done_received", req=body["req"], by=body["by"], bytes=body["_bytes"])
        return web.json_response({"ok": True})

    # --- failure handling ---------------------------------------------------------------------------------
    def _peer_dead(self, dead: str) -> None:
        """Re-rank and take over the dead peer's unfinished requests that now fall to us (fenced: ask the
        majority for each first, `_claim`)."""
        if self.fence is not None:
            for req in list(self.log):
                if self.fence.promise(req, self.members.static_owner(req)).owner == dead:
                    self._claim(req, dead)
            return
        for req, entry in list(self.log.items()):
            if entry.owner != dead:
                continue
            owner = self.members.owner_of(req)
            if owner != self.spec.id:
                entry.owner = owner
                continue
            del self.log[req]
            resume = entry.last_task + 1 if self.p.mechanism == "state-sharing" else 1
            self.sink.emit("takeover", req=req, dead=dead, from_task=resume, last_shared=entry.last_task)
            self._run(req, first_task=resume)

    def _claim(self, req: str, dead: str) -> None:
        """Fenced: if this SLM ranks first for `req` among the live ones, ask the majority for its next epoch."""
        if self.members.owner_of(req) == self.spec.id and req not in self.claiming:
            self.claiming.add(req)
            self._spawn(self._take_over(req, dead))

    async def _take_over(self, req: str, dead: str) -> None:
        """Win the next epoch of `req`, then resume it from the last task whose state was shared with us."""
        assert self.fence is not None
        try:
            epoch = await self.fence.elect(req, self.members.static_owner(req),
                                           lambda: req in self.log and req not in self.finished)
        finally:
            self.claiming.discard(req)
        if epoch is None and req in self.fence.done:  # a voter knew it finished: its 'done' never reached us
            self.log.pop(req, None)
            self.finished.add(req)
        entry = self.log.pop(req, None) if epoch is not None else None
        if entry is None or epoch is None:
            return
        resume = entry.last_task + 1
        self.sink.emit("takeover", req=req, dead=dead, from_task=resume, last_shared=entry.last_task, epoch=epoch)
        self._run(req, first_task=resume, epoch=epoch)
