"""The fenced mechanism (`mechanism: fenced`, docs/fencing.md): a takeover that never drives a workflow twice.

The paper's mechanism lets a survivor take over the moment a peer is silent for t_h; when silence is not
death (a pause, a partition, a broker outage, CPU starvation) both drive the request. Here ownership of a
request is an **epoch** (a fencing token, Kleppmann; Chubby's sequencers) that changes hands only through a
majority of the k SLMs (Raft's rule; k >= 3), and an owner acts only while it holds a **lease** that the
same majority gave it, so a paused or cut-off owner stops before a peer can start:

- epoch 1 of a request belongs to its *static* owner: the rank of the request UUID among the UUIDs of all k
  SLMs, dead or alive, so every SLM agrees without a round trip (the paper's rule ranks the live ones,
  which two SLMs may see differently);
- a survivor that ranks first for a request whose owner it declared dead asks every peer to promise it the
  next epoch (`POST /vote`). A voter grants at most one candidate an epoch, and only an epoch above every
  one it promised, and only while it too holds the owner dead (`grants`). With a majority of grants the
  candidate owns the new epoch and resumes from its last shared task (`takeover`, with `epoch`);
- the owner's lease: a heartbeat it sent at s and that a majority (itself counted) acknowledged lets it act
  until s + t_h - margin. A voter that acknowledged it still hears the owner until at least s + t_h, so no
  majority can elect anyone else before the lease has run out (`Lease`);
- an owner whose lease lapsed (it was paused, cut off, starved) may act again only after it confirmed its
  epoch with a majority (`POST /confirm`): a voter that promised a later epoch answers stale and the owner
  steps down (`stepped_down`); a confirm also counts as hearing from the owner, so a voter does not grant a
  vote against an owner that just proved it is alive;
- a voter answers (votes, confirms) only for requests it received from the BSS in its present life: a
  restarted SLM has forgotten what it promised, so it must not promise again what it may have promised to
  another; nor does it grant a takeover of a request it knows finished (it answers `done`, and the
  candidate drops it);
- the resources check the epoch: a worker refuses a call of an epoch below the highest it has seen for the
  request, on arrival and again before the effect counts (`task_fenced`), and the BSS a completion of a stale
  epoch or a second one (`completion_refused`).

Where no majority answers (the minority side of a partition, the broker gone) nobody decides: the
candidate retries and the owner waits, and that wait shows as recovery time. What it cannot survive: more
than k - majority(k) SLMs down at once (no majority: every request whose owner died waits), and clocks that
run at different rates by more than the margin (the lease is timed by each side's own monotonic clock).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from protocol.events import EventSink
from targets.http import Client, read_json

LEASE_MARGIN = 0.1  # of t_h: the owner stops acting this much before a voter could hold it dead


def majority(k: int) -> int:
    """How many of the k SLMs (the asker counted) make a decision: any two such sets share a member."""
    return k // 2 + 1


@dataclass
class Promise:
    """The highest epoch an SLM promised for one request, and to whom (its owner as this SLM knows it)."""

    epoch: int
    owner: str


def grants(promise: Promise, epoch: int, candidate: str, owner_dead: bool) -> bool:
    """Whether a voter with `promise` may promise `epoch` to `candidate`: only an epoch above every one it
    promised (so at most one candidate per epoch), and only while it holds the current owner dead (a voter
    that still hears the owner is what makes the owner's lease safe), unless the owner asks for itself."""
    return epoch > promise.epoch and (owner_dead or candidate == promise.owner)


def confirms(promise: Promise, epoch: int, owner: str) -> bool:
    """Whether `owner` still owns `epoch` as far as a voter with `promise` knows: no later epoch promised,
    and not the same epoch to someone else."""
    return epoch > promise.epoch or (epoch == promise.epoch and owner == promise.owner)


def lease_start(acks: dict[str, float], k: int) -> float | None:
    """Send time of the latest heartbeat a majority acknowledged (the owner counts as one); None: no majority."""
    need = majority(k) - 1
    if need == 0:
        return float("inf")
    times = sorted(acks.values(), reverse=True)
    return times[need - 1] if len(times) >= need else None


class Lease:
    """The instance's lease from its heartbeats' acknowledgements; `era` counts its unbroken stretches, so an
    owner can tell that it lapsed in between (and must confirm its epochs again) even once it is renewed."""

    def __init__(self, k: int, t_h: float) -> None:
        self.k, self.length = k, t_h * (1 - LEASE_MARGIN)
        self.acks: dict[str, float] = {}
        self.expires = float("-inf")
        self.era = 0
        self.renewed = asyncio.Event()

    def acked(self, peer: str, sent: float) -> None:
        """A heartbeat sent at `sent` (monotonic) was acknowledged by `peer`."""
        if sent <= self.acks.get(peer, float("-inf")):
            return
        self.acks[peer] = sent
        start = lease_start(self.acks, self.k)
        if start is None or start + self.length <= self.expires:
            return
        if start > self.expires:  # a stretch without a lease lies before this one
            self.era += 1
        self.expires = start + self.length
        self.renewed.set()
        self.renewed = asyncio.Event()

    def valid(self) -> bool:
        return time.monotonic() < self.expires


class Stale(Exception):
    """The owner learnt of a later epoch of its request: it must stop driving it."""

    def __init__(self, promise: Promise) -> None:
        super().__init__(f"epoch {promise.epoch} of {promise.owner}")
        self.promise = promise


def completion_answer(reply: dict[str, Any]) -> dict[str, bool]:
    """What the BSS's answer to a completion notice means to its sender (protocol.messages.fenced_refusal):
    `Stale` when refused as stale (a later owner exists: step down); `{"already": True}` for the event when the
    BSS had the request's completion from an earlier owner; `{}` when it counted."""
    if reply.get("refused") == "stale" and isinstance(reply.get("epoch"), int):
        raise Stale(Promise(reply["epoch"], ""))
    return {"already": True} if reply.get("refused") == "already" else {}


class Fence:
    """One SLM's side of the mechanism: its promises, its lease, the /vote and /confirm it answers and asks."""

    def __init__(self, me: str, k: int, sink: EventSink, t_h: float, hb_interval: float, message_bytes: int,
                 state_peers: dict[str, str], is_dead: Callable[[str], bool], heard: Callable[[str], None],
                 driving: Callable[[str], bool], finished: Callable[[str], bool], client: Client,
                 tags: Callable[[str], dict[str, Any]] | None = None) -> None:
        """`state_peers`: peer id -> its state-plane address; `is_dead`/`heard`: the failure detector's view of
        a peer and the way to tell it a peer spoke (a /vote or /confirm counts as hearing from it); `driving`:
        whether this SLM runs a request's workflow now (an owner never grants a vote against itself);
        `finished`: whether it knows the request completed; `tags`: fields every /vote and /confirm of a
        request carries besides the mechanism's own (a module's hop and the witness incarnation it knows)."""
        self.me, self.k, self.sink = me, k, sink
        self.t_h, self.retry = t_h, hb_interval / 2
        self.size = message_bytes
        self.state_peers, self.is_dead, self.heard, self.client = state_peers, is_dead, heard, client
        self.driving, self.finished = driving, finished
        self.tags = tags or (lambda req: {})
        self.lease = Lease(k, t_h)
        self.promises: dict[str, Promise] = {}
        self.known: set[str] = set()  # requests received from the BSS in this life: the only ones it answers for
        self.done: set[str] = set()  # requests a voter said were finished: no takeover of them
        self.eras: dict[str, int] = {}  # req -> lease era in which this owner last knew its epoch good

    def promise(self, req: str, static_owner: str) -> Promise:
        """What this SLM promised for `req` (epoch 1 of its static owner until anything else was promised)."""
        return self.promises.setdefault(req, Promise(1, static_owner))

    def received(self, req: str, static_owner: str) -> Promise:
        """The BSS's request reached this SLM: from now on it answers votes and confirms for it."""
        self.known.add(req)
        return self.promise(req, static_owner)

    def done_by(self, req: str, static_owner: str, epoch: object, by: str) -> None:
        """A peer's 'done' of `req` under `epoch`: if that epoch is later than this instance's own (or the same,
        another's), a workflow of its own for `req` is stale, and its next step steps down."""
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            return
        known = self.promise(req, static_owner)
        if epoch > known.epoch or (epoch == known.epoch and known.owner != self.me):
            self.promises[req] = Promise(epoch, by)

    # --- the voter ----------------------------------------------------------------------------------------
    async def handle_vote(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "epoch": int, "candidate": str, "static": str})
        req, epoch, candidate = body["req"], body["epoch"], body["candidate"]
        self.heard(candidate)
        if req not in self.known:  # never received here, or before a restart: no promise it could keep
            return web.json_response({"granted": False})
        if self.finished(req):
            return web.json_response({"granted": False, "done": True})
        promise = self.promise(req, body["static"])
        # a candidate that is not driving the request steps back for a later epoch (Raft's higher term)
        idle = self.is_dead(promise.owner) or (promise.owner == self.me and not self.driving(req))
        granted = grants(promise, epoch, candidate, idle)
        if granted:
            self.promises[req] = promise = Promise(epoch, candidate)
            self.sink.emit("vote_granted", req=req, epoch=epoch, candidate=candidate, bytes=body["_bytes"])
        return web.json_response({"granted": granted, "epoch": promise.epoch, "owner": promise.owner})

    async def handle_confirm(self, request: web.Request) -> web.Response:
        body = await read_json(request, {"req": str, "epoch": int, "owner": str, "static": str})
        req, epoch, owner = body["req"], body["epoch"], body["owner"]
        self.heard(owner)
        if req not in self.known:  # a restarted voter may have promised a later epoch it no longer knows of
            return web.json_response({"ok": False})
        promise = self.promise(req, body["static"])
        ok = confirms(promise, epoch, owner)
        if ok:
            self.promises[req] = promise = Promise(epoch, owner)
        return web.json_response({"ok": ok, "epoch": promise.epoch, "owner": promise.owner})

    # --- asking the peers -----------------------------------------------------------------------------------
    async def _ask(self, path: str, body: dict[str, Any], ok_key: str, lost_at: int) -> tuple[int, Promise | None]:
        """Ask every peer; the number that said yes (the asker not counted) and the latest promise refused
        with, once a majority said yes, one refused with a promise of epoch `lost_at` or later (the question
        is decided against the asker), or every answer is in."""
        need = majority(self.k) - 1
        yes, refused = 0, None
        asks = [asyncio.create_task(self._post(addr, path, body)) for addr in self.state_peers.values()]
        try:
            for done in asyncio.as_completed(asks):
                reply = await done
                if reply is None:
                    continue
                if reply.get("done"):
                    self.done.add(str(body["req"]))
                    break
                if reply.get(ok_key):
                    yes += 1
                elif isinstance(reply.get("epoch"), int) and isinstance(reply.get("owner"), str):
                    seen = Promise(reply["epoch"], reply["owner"])
                    if refused is None or seen.epoch > refused.epoch:
                        refused = seen
                if yes >= need or (refused is not None and refused.epoch >= lost_at):
                    break
        finally:
            for task in asks:
                task.cancel()
        return yes, refused

    async def _post(self, addr: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            reply, _, _ = await self.client.post(addr, path, body, self.size, timeout=max(self.t_h, 0.05))
            return reply
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None  # no answer: the majority is what decides

    async def elect(self, req: str, static_owner: str, still_wanted: Callable[[], bool]) -> int | None:
        """Ask the peers for the next epoch of `req` until a majority grants it (the epoch), this SLM promised
        a later epoch to a live rival candidate (None: it stepped back) or `still_wanted()` turns false (None).
        Waits in between: without a majority nobody may decide. A refusal is no reason to give up (a rival is
        only a candidate until it wins; giving up would leave this SLM's promise deposing an owner for
        nobody): the next round asks above every epoch seen, after a wait that doubles, with jitter so that
        rival candidates do not collide again, from half a heartbeat interval up to t_h."""
        wait, seen = self.retry, 0
        while still_wanted() and req not in self.done:
            mine = self.promise(req, static_owner)
            epoch = max(mine.epoch, seen) + 1
            if not grants(mine, epoch, self.me, self.is_dead(mine.owner) or mine.owner == self.me):
                return None
            self.promises[req] = Promise(epoch, self.me)
            self.sink.emit("vote_asked", req=req, epoch=epoch, peers=len(self.state_peers),
                           bytes=self.size * len(self.state_peers))
            yes, refused = await self._ask("/vote", {"req": req, "epoch": epoch, "candidate": self.me,
                                                     "static": static_owner, **self.tags(req)}, "granted", epoch + 1)
            if req in self.done:
                return None
            if yes >= majority(self.k) - 1 and self.promises.get(req) == Promise(epoch, self.me):
                self.eras[req] = self.lease.era
                return epoch
            seen = max(seen, refused.epoch if refused is not None else 0)
            await asyncio.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(2 * wait, self.t_h)
        return None

    async def may_act(self, req: str, epoch: int, static_owner: str) -> None:
        """Return once this owner may act on `req` at `epoch` now: its lease holds, and its epoch was
        confirmed in the lease's present stretch. Raise `Stale` when a later epoch exists; wait otherwise."""
        while True:
            mine = self.promises.get(req)
            if mine is not None and not confirms(mine, epoch, self.me):
                raise Stale(mine)
            if self.lease.valid() and self.eras.get(req) == self.lease.era:
                return
            if not self.lease.valid():
                try:
                    await asyncio.wait_for(self.lease.renewed.wait(), timeout=self.retry)
                except TimeoutError:
                    pass
                continue
            era = self.lease.era
            yes, refused = await self._ask("/confirm", {"req": req, "epoch": epoch, "owner": self.me,
                                                        "static": static_owner, **self.tags(req)}, "ok", epoch)
            outcome = "ok" if yes >= majority(self.k) - 1 else "stale" if refused and refused.epoch >= epoch \
                else "undecided"
            self.sink.emit("epoch_check", req=req, epoch=epoch, outcome=outcome, era=era,
                           bytes=self.size * len(self.state_peers))
            if outcome == "stale" and refused is not None:
                self.promises[req] = refused
                raise Stale(refused)
            if outcome == "ok":
                self.eras[req] = era
            else:
                await asyncio.sleep(self.retry)
