"""The chain's witness: the third voter of each twin pair under the fenced mechanism (distributed design).

Why a witness: a module and its twin are two, and a majority of two is both, so the survivor of a real
crash could never win one. Two-node clusters meet this with a third member that votes and holds no data:
MongoDB's arbiter, a Windows failover cluster's file-share witness, Spanner's witness replicas. Here one
witness process serves the whole chain: for each hop i it is the third voter of {m_ia, m_ib, witness}, so
`targets.fencing`'s rules hold with k = 3 (a majority is a twin and the witness, or both twins):

- it hears every module's heartbeats and acknowledges them (the acknowledgement renews the module's lease
  like a twin's), naming its incarnation (a UUID made at start);
- it answers `/vote` and `/confirm` of hop i's requests with the same rules as an SLM (`grants`,
  `confirms`), its promises kept per (hop, request); it holds a module dead once it has not heard from it
  for t_h (since its own start, for a module it never heard from: an earlier incarnation's acknowledgement may
  still hold that module's lease);
- it answers only for a request whose asker received it while this incarnation was the one it knew (the
  `witness` field of the ask): a restarted witness has forgotten its promises, so it must not promise again
  about a request an earlier incarnation may have promised something for (an SLM's rule of answering only for
  requests received in its present life, `Fence.known`, in the witness's terms). Its promises live in memory
  only (Raft's voters write theirs to disk): a restarted witness is a new voter that knows no old request.

It drives nothing and takes no request, so it appears in no stint of the checker; its one event is
`vote_granted` (with the hop in `task`). Its death costs the chain nothing while both twins of each hop live
(they are a majority of the three); with a twin and the witness down, that hop waits.
"""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from protocol.events import EventSink
from protocol.spec import ServiceSpec
from targets.fencing import Promise, confirms, grants
from targets.http import Planes, read_json
from targets.spec import Params

Key = tuple[int, str]  # (hop, request)


class Witness:
    def __init__(self, spec: ServiceSpec, sink: EventSink) -> None:
        self.spec, self.sink = spec, sink
        self.p = Params(spec.z)
        self.uuid = str(uuid.uuid4())
        self.modules = set(spec.peers)  # the chain's module instances: the only voices it heeds
        self.last_seen: dict[str, float] = {}
        self.started = time.monotonic()
        self.promises: dict[Key, Promise] = {}
        self.planes = Planes(sink, spec.bind, spec.ports, self.p.max_message)
        self.planes.route("op", "GET", "/health", self.health)
        self.planes.route("hb", "POST", "/hb", self.handle_heartbeat)
        self.planes.route("state", "POST", "/vote", self.handle_vote)
        self.planes.route("state", "POST", "/confirm", self.handle_confirm)

    async def start(self) -> None:
        await self.planes.start()
        self.sink.emit("started", role="witness", uuid=self.uuid)

    async def stop(self) -> None:
        await self.planes.stop()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "uuid": self.uuid, "id": self.spec.id})

    def heard(self, module: str) -> None:
        if module in self.modules:
            self.last_seen[module] = time.monotonic()

    def is_dead(self, module: str) -> bool:
        """Silent for t_h; a module never heard from counts as heard at this incarnation's start: an earlier
        incarnation's acknowledgement may still hold that module's lease (it is keyed by the witness's id)."""
        seen = self.last_seen.get(module, self.started)
        return time.monotonic() > seen + self.p.t_h

    async def handle_heartbeat(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"id": str, "uuid": str})
        if body["id"] not in self.modules:
            raise web.HTTPNotFound(text=f"unknown module {body['id']!r}")
        self.heard(body["id"])
        return web.json_response({"ok": True, "uuid": self.uuid})

    def _promise(self, body: dict) -> Promise | None:
        """This incarnation's promise for the ask's (hop, request); None when the asker received the request
        under another incarnation (or under none), about which this one must say nothing."""
        if body.get("witness") != self.uuid or not isinstance(body.get("task"), int):
            return None
        return self.promises.setdefault((body["task"], body["req"]), Promise(1, body["static"]))

    async def handle_vote(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "epoch": int, "candidate": str, "static": str})
        self.heard(body["candidate"])
        promise = self._promise(body)
        if promise is None:
            return web.json_response({"granted": False})
        epoch, candidate = body["epoch"], body["candidate"]
        granted = grants(promise, epoch, candidate, self.is_dead(promise.owner))
        if granted:
            self.promises[(body["task"], body["req"])] = promise = Promise(epoch, candidate)
            self.sink.emit("vote_granted", req=body["req"], task=body["task"], epoch=epoch, candidate=candidate,
                           bytes=body["_bytes"])
        return web.json_response({"granted": granted, "epoch": promise.epoch, "owner": promise.owner})

    async def handle_confirm(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "epoch": int, "owner": str, "static": str})
        self.heard(body["owner"])
        promise = self._promise(body)
        if promise is None:
            return web.json_response({"ok": False})
        ok = confirms(promise, body["epoch"], body["owner"])
        if ok:
            self.promises[(body["task"], body["req"])] = promise = Promise(body["epoch"], body["owner"])
        return web.json_response({"ok": ok, "epoch": promise.epoch, "owner": promise.owner})
