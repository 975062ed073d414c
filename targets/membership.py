"""Heartbeats, failure detection and UUID ranking: the part of section V both designs share.

Each instance makes a UUID at start and puts it in every heartbeat (sent every 1/h_r to every peer). A
peer is declared dead when nothing was heard from it for longer than t_h; a heartbeat from a peer declared
dead brings it back (a paused process, a healed partition) and is recorded, because then two instances may
be working on the same request: the checker must see that, not us hide it. The request owner is the
member whose rank (position among the sorted UUIDs of the members alive) equals the request UUID modulo
the number of members: the parity for two.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from targets.events import EventSink
from targets.http import Client, Planes, read_json
from targets.spec import Params, ServiceSpec


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
                 on_dead: Callable[[str], None]) -> None:
        self.me, self.sink, self.params = me, sink, params
        self.uuid = str(uuid.uuid4())
        self.peers = {pid: Peer(pid, addr) for pid, addr in peers.items()}
        self.on_dead = on_dead
        self.client = Client()
        self.seq = 0
        self._pending: set[asyncio.Task] = set()

    # --- ranking ---------------------------------------------------------------------------------------
    def ready(self) -> bool:
        """True once every peer's UUID is known, so every instance ranks requests the same way."""
        return all(p.uuid is not None for p in self.peers.values())

    def members(self) -> list[tuple[str, str]]:
        """(uuid, id) of this instance and every peer not declared dead, sorted by UUID: the ranks."""
        alive = [(p.uuid, p.id) for p in self.peers.values() if p.uuid and not p.dead]
        return sorted([(self.uuid, self.me), *alive])

    def owner_of(self, req: str) -> str:
        ranked = self.members()
        return ranked[uuid.UUID(req).int % len(ranked)][1]

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
            self.seq += 1
            for peer in self.peers.values():
                task = asyncio.create_task(self._send(peer))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            self.sink.emit("hb_sent", seq=self.seq, peers=len(self.peers), bytes=self.params.hb_bytes)
            next_tick = start + self.seq * self.params.hb_interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

    async def _send(self, peer: Peer) -> None:
        body = {"id": self.me, "uuid": self.uuid, "seq": self.seq}
        try:
            await self.client.post(peer.hb_addr, "/hb", body, self.params.hb_bytes,
                                   timeout=max(self.params.t_h, 0.05))
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # a silent peer is what the monitor is for

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
