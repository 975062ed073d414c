"""The centralised design's orchestrator (SLM), k >= 2 instances (paper section V-A, Figs 2 and 4).

Every SLM receives every request. The owner (by UUID rank, see `membership`) runs the workflow: before
each task and once at the end it spends t_o of orchestrator processing, calls worker m_i with P_a kB and
gets P_b kB back. The others log the request. After task s_o and then every s_p tasks the owner sends its
accumulated state (s_z kB) to every peer, so that when it is declared dead the new owner resumes from the
last task it heard of instead of from the start. With `mechanism: restart` there is no state sharing: a
survivor restarts from task 1, like a replication controller would (the baseline the paper argues against).
When a workflow completes the owner tells the BSS, then sends each peer a small 'done' (p_c kB) so they
drop it from their log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from protocol.bus import task_call_timeout
from protocol.events import EventSink
from protocol.spec import ServiceSpec
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

    # --- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.start_replica(role="slm", k=self.p.k)

    async def stop(self) -> None:
        for task in [*self.loops, *self.running.values(), *self._background]:
            task.cancel()
        await self.planes.stop()
        await asyncio.gather(self.op.close(), self.state_client.close(), self.members.close())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- requests -----------------------------------------------------------------------------------------
    async def handle_request(self, request: web.Request) -> web.Response:
        body, req, owner = await self.read_request(request)
        if req in self.finished or req in self.running or req in self.log:
            self.sink.emit("request_duplicate", req=req)
            return web.json_response({"accepted": False, "reason": "known"}, status=200)
        self.sink.emit("request_received", req=req, owner=owner, bytes=body["_bytes"])
        if owner == self.spec.id:
            self._run(req, first_task=1)
        else:
            self.log[req] = LogEntry(owner)
            self.sink.emit("request_logged", req=req, owner=owner)
        return web.json_response({"accepted": True, "owner": owner}, status=202)

    def _run(self, req: str, first_task: int) -> None:
        self.running[req] = asyncio.create_task(self.workflow(req, first_task))

    async def workflow(self, req: str, first_task: int) -> None:
        """Tasks first_task..n with t_o before each and once at the end (Eq 2's (n + 1) t_o)."""
        try:
            for i in range(first_task, self.p.n + 1):
                await spend(self.p.t_o, self.p.work)
                await self.call_task(req, i)
                if self.p.share_after(i):
                    self._spawn(self.share_state(req, i))
            await spend(self.p.t_o, self.p.work)
            await self.complete(req)
        finally:
            self.running.pop(req, None)

    async def call_task(self, req: str, i: int) -> None:
        """Call m_i (any live replica), retrying until one answers: a workflow is never dropped."""
        replicas = self.spec.workers[i - 1]
        attempt = 0
        while True:
            replica = (self.preferred.get(i, 0) + attempt) % len(replicas)
            addr = replicas[replica]
            self.sink.emit("task_call", req=req, task=i, name=task_name(i), worker=addr, attempt=attempt)
            try:
                _, sent, got = await self.op.post(addr, "/task", {"req": req, "task": i}, self.p.p_a[i - 1],
                                                  timeout=task_call_timeout(self.p.t_i[i - 1], self.p.scale))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.sink.emit("task_call_failed", req=req, task=i, worker=addr, error=type(exc).__name__)
                attempt += 1
                await asyncio.sleep(RETRY_BACKOFF if attempt % len(replicas) == 0 else 0)
                continue
            await self.members.at_end_of(req, i)  # a crash at the worst moment strikes here (membership)
            self.sink.emit("task_reply", req=req, task=i, name=task_name(i), worker=addr, bytes_out=sent,
                           bytes_in=got)
            self.preferred[i] = replica
            return

    async def share_state(self, req: str, task: int) -> None:
        """Send the accumulated state to every live peer; recorded per peer once it acknowledged."""
        for pid, addrs in self.spec.peers.items():
            if self.members.peers[pid].dead:
                continue
            try:
                _, sent, _ = await self.state_client.post(
                    addrs["state"], "/state", {"req": req, "owner": self.spec.id, "last_task": task},
                    self.p.state_bytes, timeout=max(5.0, 10 * self.p.t_h))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.sink.emit("state_share_failed", req=req, task=task, peer=pid, error=type(exc).__name__)
                continue
            self.sink.emit("state_share_sent", req=req, task=task, peer=pid, bytes=sent)

    async def complete(self, req: str) -> None:
        """Tell the BSS (retrying: a completion is never dropped), then tell the peers 'done'."""
        assert self.spec.bss
        await self.op.deliver(self.spec.bss, "/complete", {"req": req, "by": self.spec.id}, backoff=RETRY_BACKOFF,
                              headers=signed(self.spec.secret))
        self.finished.add(req)
        self.sink.emit("request_completed", req=req)
        for pid, addrs in self.spec.peers.items():
            if not self.members.peers[pid].dead:
                self._spawn(self.send_done(req, pid, addrs["state"]))

    async def send_done(self, req: str, pid: str, addr: str) -> None:
        try:
            _, sent, _ = await self.state_client.post(addr, "/done", {"req": req, "by": self.spec.id},
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
        if req in self.running or req in self.finished:
            self.sink.emit("state_share_stale", req=req, task=task, owner=body["owner"])
            return web.json_response({"ok": False})
        entry = self.log.setdefault(req, LogEntry(body["owner"]))
        entry.owner, entry.last_task = body["owner"], max(entry.last_task, task)
        self.sink.emit("state_share_received", req=req, task=task, owner=body["owner"], bytes=body["_bytes"])
        return web.json_response({"ok": True})

    async def handle_done(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "by": str})
        self.log.pop(body["req"], None)
        self.finished.add(body["req"])
        self.sink.emit("done_received", req=body["req"], by=body["by"], bytes=body["_bytes"])
        return web.json_response({"ok": True})

    # --- failure handling ---------------------------------------------------------------------------------
    def _peer_dead(self, dead: str) -> None:
        """Re-rank and take over the dead peer's unfinished requests that now fall to us."""
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
