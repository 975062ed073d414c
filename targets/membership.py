"""Heartbeats, failure detection and UUID ranking: the part of section V both designs share.

Each instance makes a UUID at start and puts it in every heartbeat (sent every 1/h_r to every peer). A
peer is declared dead when nothing was heard from it for longer than t_h; a heartbeat from a peer declared
dead brings it back (a paused process, a healed partition) and is recorded, because then two instances may
be working on the same request: the checker must see that, not us hide it. The request owner is the
member whose rank (position among the sorted UUIDs of the members alive) equals the request UUID modulo
the number of members: the parity for two.

The hb plane also takes two control calls from the harness, so a crash can be put at the model's worst
moment (Eqs 3 and 7: directly after a heartbeat the survivors DO receive, so they wait the full t_h). In a
real system the heartbeat phase is arbitrary; the worst phase is a heartbeat that goes out just as the
instance dies, and that is what these emulate:

- `POST /hb-now` `{"req"?, "task"?, "silence"?}`: send one heartbeat to every peer, recorded as `hb_sent`
  with `triggered: true`, and answer once every peer has acknowledged it (`sent`, `acked`, `unacked`).
  With `req` and `task` it is sent when the instance reaches the end of that task of that request (the
  SLM has the worker's reply, the module has finished its t_i) and before it acts on it: 409 if the
  request is already past that point. With `silence: true` the instance then falls silent: it sends no
  heartbeat, call, share, forward or completion and holds that task's result, as if it had crashed the
  moment the heartbeat left. The caller SIGKILLs it after the answer; the ack round trip (2 l_hb) it
  waits for costs nothing, because the instance stopped acting when the heartbeat went out.
  With `mute: true` the instance sends no scheduled heartbeat after that one but goes on working: a crash
  the harness strikes a phase later (`fault_at task:K@F`, faults/aim.py) then comes F heartbeat
  intervals after the survivors last heard from it, whatever the schedule's own phase.
- `POST /release`: speak again (after a pause or a link fault struck at that moment; a crash never needs it).

Both silence an instance, so both answer 403 (counted, not recorded) without the instance's own key in the
`X-Manobench-Secret` header (`protocol.auth`): only the run's harness, which made that key, can call them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from protocol.events import EventSink
from protocol.spec import ServiceSpec
from targets.http import Client, Planes, read_json, require
from targets.spec import Params

PASSED_KEPT = 4096  # (req, task) points remembered, so a /hb-now for a point already passed is refused


@dataclass
class Mark:
    """A /hb-now waiting for the end of task `task` of `req`: the heartbeat is sent the moment it is reached."""

    request: web.Request
    silence: bool
    mute: bool
    sent: asyncio.Future[tuple[float, list[asyncio.Task[bool]]]]


class Gated(Client):
    """A client whose messages wait while the instance is silent (see /hb-now)."""

    def __init__(self, voice: asyncio.Event) -> None:
        super().__init__()
        self.voice = voice

    async def post(self, addr: str, path: str, body: dict[str, Any], size: int, timeout: float,
                   headers: dict[str, str] | None = None) -> tuple[dict[str, Any], int, int]:
        await self.voice.wait()
        return await super().post(addr, path, body, size, timeout, headers)


@dataclass
class Peer:
    id: str
    hb_addr: str
    uuid: str | None = None
    last_seen: float | None = None
    dead: bool = False


class Membership:
    """Failure detector and ranking for one instance and its peers (other SLMs, or a module's twin)."""

    def __init__(self, me: str, sink: EventSink, params: Params, peers: dict[str, str],
                 on_dead: Callable[[str], None], secret: str | None = None,
                 watchers: dict[str, str] | None = None) -> None:
        """`secret`: this instance's key; /hb-now and /release answer 403 without it (they silence it).
        `watchers`: id -> hb address of instances that hear this one's heartbeats but are no peers: never
        ranked, never declared dead (the fenced distributed design's witness, targets/witness.py); their
        acknowledgements count for the lease (`on_ack`) and name their incarnation (`Peer.uuid`)."""
        self.me, self.sink, self.params = me, sink, params
        self.secret = secret
        self.uuid = str(uuid.uuid4())
        self.peers = {pid: Peer(pid, addr) for pid, addr in peers.items()}
        self.watchers = {wid: Peer(wid, addr) for wid, addr in (watchers or {}).items()}
        self.on_dead = on_dead
        self.client = Client()
        self.seq = 0
        self._pending: set[asyncio.Task] = set()
        self.voice = asyncio.Event()  # cleared while silent: nothing but a triggered heartbeat leaves
        self.voice.set()
        self.beating = asyncio.Event()  # cleared when muted: no scheduled heartbeat, everything else goes on
        self.beating.set()
        self.on_ack: Callable[[str, float], None] | None = None  # (peer, send time) of an acknowledged heartbeat
        self.marks: dict[tuple[str, int], Mark] = {}
        self.passed: dict[tuple[str, int], None] = {}  # insertion-ordered, the last PASSED_KEPT

    def gated_client(self) -> Gated:
        """A client for the instance's own messages (op and state planes), silenced with it."""
        return Gated(self.voice)

    # --- ranking ---------------------------------------------------------------------------------------
    def ready(self) -> bool:
        """True once every peer's UUID is known, so every instance ranks requests the same way (and every
        watcher's, so that a request can name the witness's incarnation it arrived under)."""
        return all(p.uuid is not None for p in [*self.peers.values(), *self.watchers.values()])

    def members(self) -> list[tuple[str, str]]:
        """(uuid, id) of this instance and every peer not declared dead, sorted by UUID: the ranks."""
        alive = [(p.uuid, p.id) for p in self.peers.values() if p.uuid and not p.dead]
        return sorted([(self.uuid, self.me), *alive])

    def owner_of(self, req: str) -> str:
        ranked = self.members()
        return ranked[uuid.UUID(req).int % len(ranked)][1]

    def static_owner(self, req: str) -> str:
        """The owner by rank among every member, dead or alive: the same on every instance once all UUIDs are
        known, whoever each one holds dead (the fenced mechanism's epoch 1, targets/fencing.py)."""
        ranked = sorted([(self.uuid, self.me), *((p.uuid or "", p.id) for p in self.peers.values())])
        return ranked[uuid.UUID(req).int % len(ranked)][1]

    def is_dead(self, peer: str) -> bool:
        """Whether this instance holds `peer` dead (itself never; an unknown name always)."""
        if peer == self.me:
            return False
        known = self.peers.get(peer)
        return known is None or known.dead

    def heard(self, peer: str) -> None:
        """`peer` spoke other than by a heartbeat (a fenced vote or confirm): it is alive as of now."""
        known = self.peers.get(peer)
        if known is None:
            return
        known.last_seen = time.monotonic()
        if known.dead:
            known.dead = False
            self.sink.emit("peer_rejoined", peer=peer)

    # --- heartbeats in -----------------------------------------------------------------------------------
    async def handle_heartbeat(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        body = await read_json(request, {"id": str, "uuid": str})
        peer = self.peers.get(body["id"])
        if peer is None:
            raise web.HTTPNotFound(text=f"unknown peer {body['id']!r}")
        peer.last_seen, peer.uuid = now, body["uuid"]
        if peer.dead:
            peer.dead = False
            self.sink.emit("peer_rejoined", peer=peer.id)
        return web.json_response({"ok": True})

    # --- heartbeats out ----------------------------------------------------------------------------------
    async def heartbeat_loop(self) -> None:
        """Heartbeats on an absolute schedule, so a slow peer or a GC pause does not drift the rate."""
        start = time.monotonic()
        while True:
            await self.voice.wait()
            await self.beating.wait()
            self.seq += 1
            for peer in [*self.peers.values(), *self.watchers.values()]:
                self._background(self._send(peer))
            self.sink.emit("hb_sent", seq=self.seq, peers=len(self.peers) + len(self.watchers),
                           bytes=self.params.hb_bytes)
            next_tick = start + self.seq * self.params.hb_interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, peer: Peer, triggered: bool = False) -> bool:
        """One heartbeat to `peer`; True once it acknowledged it."""
        body = {"id": self.me, "uuid": self.uuid, "seq": self.seq, **({"triggered": True} if triggered else {})}
        sent = time.monotonic()
        try:
            reply, _, _ = await self.client.post(peer.hb_addr, "/hb", body, self.params.hb_bytes,
                                                 timeout=max(self.params.t_h, 0.05))
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False  # a silent peer is what the monitor is for
        if peer.id in self.watchers and isinstance(reply.get("uuid"), str):
            peer.uuid = reply["uuid"]  # the watcher's incarnation (a restarted witness has a new one)
        if self.on_ack is not None:
            self.on_ack(peer.id, sent)
        return True

    # --- the heartbeat at a chosen moment (harness control) -------------------------------------------------
    def _last_words(self, silence: bool, mute: bool = False) -> tuple[float, list[asyncio.Task[bool]]]:
        """Fall silent or mute (if asked) and send one heartbeat to every peer now; its send time and the sends."""
        if silence:
            self.voice.clear()
        if mute:
            self.beating.clear()
        sends = [asyncio.create_task(self._send(peer, triggered=True)) for peer in self.peers.values()]
        for watcher in self.watchers.values():  # heard too (the lease), but the answer waits for the peers only
            self._background(self._send(watcher, triggered=True))
        event = self.sink.emit("hb_sent", seq=self.seq, peers=len(self.peers) + len(self.watchers),
                               bytes=self.params.hb_bytes, triggered=True, silence=silence)
        return event["t"], sends

    async def at_end_of(self, req: str, task: int) -> None:
        """Called where task `task` of `req` has ended here, before the instance acts on it: a /hb-now waiting
        for this point sends its heartbeat now, and a silent instance holds here."""
        key = (req, task)
        self.passed[key] = None
        if len(self.passed) > PASSED_KEPT:
            del self.passed[next(iter(self.passed))]
        mark = self.marks.pop(key, None)
        transport = mark.request.transport if mark else None
        if mark and transport is not None and not transport.is_closing() and not mark.sent.done():
            mark.sent.set_result(self._last_words(mark.silence, mark.mute))
        await self.voice.wait()

    async def handle_hb_now(self, request: web.Request) -> web.Response:
        require(request, self.secret)
        body = await read_json(request, {})
        req, task = body.get("req"), body.get("task")
        silence, mute = body.get("silence", False), body.get("mute", False)
        if not isinstance(silence, bool) or not isinstance(mute, bool):
            raise web.HTTPBadRequest(text="silence and mute must be true or false")
        if req is None:
            sent, sends = self._last_words(silence, mute)
        else:
            if not (isinstance(req, str) and isinstance(task, int) and not isinstance(task, bool)):
                raise web.HTTPBadRequest(text="req must be a string, with a task (int)")
            key = (req, task)
            if key in self.passed:
                raise web.HTTPConflict(text=f"{req} is past the end of task {task}")
            mark = Mark(request, silence, mute, asyncio.get_running_loop().create_future())
            self.marks[key] = mark
            try:
                sent, sends = await mark.sent
            finally:
                if self.marks.get(key) is mark:
                    del self.marks[key]
        acked = await asyncio.gather(*sends)
        peers = list(self.peers)
        return web.json_response({"seq": self.seq, "sent": sent, "silent": not self.voice.is_set(),
                                  "acked": [p for p, ok in zip(peers, acked, strict=True) if ok],
                                  "unacked": [p for p, ok in zip(peers, acked, strict=True) if not ok]})

    async def handle_release(self, request: web.Request) -> web.Response:
        require(request, self.secret)
        was_silent = not self.voice.is_set()
        self.voice.set()
        self.beating.set()
        if was_silent:
            self.sink.emit("released")
        return web.json_response({"was_silent": was_silent})

    # --- failure detection ---------------------------------------------------------------------------------
    async def monitor_loop(self) -> None:
        """Declare a peer dead the moment t_h has passed since it was last heard from.

        Before blaming a peer we let our own event loop read what is already waiting in its sockets: after
        a stall of our own (CPU starvation, a GC pause) the peer's heartbeats may be sitting unread in the
        receive buffer, and declaring it dead then would be our failure, not its.
        """
        while True:
            now = time.monotonic()
            if any(not p.dead and p.last_seen is not None and now > p.last_seen + self.params.t_h
                   for p in self.peers.values()):
                for _ in range(6):  # select(), protocol callback, handler task, body read: a few loop rounds
                    await asyncio.sleep(0)
                now = time.monotonic()
            deadlines = []
            for peer in self.peers.values():
                if peer.dead or peer.last_seen is None:
                    continue
                deadline = peer.last_seen + self.params.t_h
                if now > deadline:
                    peer.dead = True
                    self.sink.emit("peer_dead", peer=peer.id, silent_for=now - peer.last_seen,
                                   last_seen=peer.last_seen)
                    self.on_dead(peer.id)
                else:
                    deadlines.append(deadline)
            wait = min(deadlines) - now if deadlines else self.params.hb_interval
            await asyncio.sleep(min(max(wait, 0.0) + 0.0005, self.params.hb_interval))

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await self.client.close()


class Replicated:
    """What an SLM and a module instance share: they have peers (or a twin), heartbeat them, detect their
    failure, and are ready only once they know every peer's UUID (before that, ranks would disagree)."""

    spec: ServiceSpec
    sink: EventSink
    planes: Planes
    members: Membership
    _background: set[asyncio.Task]  # each instance makes its own: what `_spawn` started and stop() cancels

    def _spawn(self, coro: Any) -> None:
        """Run `coro` beside the instance's work, kept referenced until it ends (and cancelled at stop)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def route_heartbeats(self) -> None:
        """The hb plane: peers' heartbeats, and the harness's /hb-now and /release (module docstring)."""
        self.planes.route("hb", "POST", "/hb", self.members.handle_heartbeat)
        self.planes.route("hb", "POST", "/hb-now", self.members.handle_hb_now)
        self.planes.route("hb", "POST", "/release", self.members.handle_release)

    async def start_replica(self, **started: object) -> None:
        await self.planes.start()
        self.loops = [asyncio.create_task(self.members.heartbeat_loop()),
                      asyncio.create_task(self.members.monitor_loop())]
        self.sink.emit("started", uuid=self.members.uuid, **started)

    async def read_request(self, request: web.Request) -> tuple[dict, str, str]:
        """The request's body, its UUID and the member that owns it by rank (400 if it is not a UUID)."""
        body = await read_json(request, {"req": str})
        try:
            owner = self.members.owner_of(body["req"])
        except ValueError:
            raise web.HTTPBadRequest(text="req is not a UUID") from None
        return body, body["req"], owner

    async def health(self, request: web.Request) -> web.Response:
        ready = self.members.ready()
        return web.json_response({"ready": ready, "uuid": self.members.uuid, "id": self.spec.id},
                                 status=200 if ready else 503)
