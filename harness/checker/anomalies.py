"""The two anomalies a takeover mechanism must not allow, named from the history (issue 22): two instances
driving one request at overlapping times (`concurrent_owners`), and a task's effect applied twice within one
request epoch (`double_effects`). Pure functions over the events, for every design, mechanism and transport.

Who drives a request, and when. A **claim** makes an instance a driver: its `request_received` naming itself
the `owner` (the rank owner at receipt), or its `takeover`. From its claim on, an instance's **acts** for that
request are the events showing it advanced the request *and that something took it*:
- centralised (an SLM): `task_reply` (a worker did a task for it), `state_share_sent` that the peer stored (a
  `state_share_received` of that request and task naming it the owner: a stale share a peer ignored moved
  nothing), `request_completed` (the BSS took its notice; not one marked `already`: the fenced BSS had the
  request's completion from an earlier owner and did not count it). A `task_call` counts through its reply:
  a call nobody answered, or one a fenced worker refused (`task_fenced`), drove nothing, and a fenced owner
  records no `task_reply` once it learns its epoch is stale;
- distributed (an instance of m_i; its claims carry `task` = i, the hop, and so does each act): `task_start`,
  `task_end`, `forward_sent`, `request_completed`.
A **stint** is one instance's driving of one request (of one hop, distributed): from a claim to its last act
before its next claim. Two stints of different instances of the same request (and hop) **overlap** when each
began before the other's last act, and both acted: a claim with no act after it drove nothing (a paused
owner that wakes to a request it ranks first for, learns of the later epoch and steps down before any act).
So a clean takeover after a crash is no overlap (the victim's last act came before the survivor's claim, t_h
later), while a paused owner that wakes up and acts beside the taker is one: its stint runs from its claim,
across the pause, to its acts after it. A paused owner holds its claim through the pause: that is what
"driving at the same time" means here, not two events at one instant.

Epochs, and when a re-execution is legitimate. The rule is the issue's: a task's effect (a worker's, a
module's or the monolith's `task_end`) is applied at most once per request epoch. With fencing the services
stamp the epoch (`epoch`, an integer, on `task_start`/`task_end`): same request, task and epoch twice is a
double effect. Without it the epoch is derived: the stints of one request (hop) merged where they overlap,
each merged span one epoch, in time order. A clean takeover opens a new epoch, so the survivor's redo of a
task the victim had done is a re-execution (still counted in `reexecuted_tasks`), not a double effect; two
owners at once share one epoch, so whatever both applied is. An effect belongs to the epoch in force when it
began (its `task_start`, paired in order with the `task_end` of the same executor, request and task): the
call that caused it was made then. A task applied twice by one owner (a call retried after a time-out that
the worker had in fact done) is a double effect too.

What cannot be known is not a zero: a history with no claim at all (a black-box target, `instrumented:
false`; a history of the client's events only) gives None for both, and summary.csv writes `n/a`. An effect
no claim precedes (its request's `request_received` or `takeover` missing from the history) is counted apart
(`unattributed`), never in a double effect.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.history import Event

# summary.csv's columns of this module, in its order (written once, here)
ANOMALY_COLUMNS = ("concurrent_owners", "double_effects")
NOT_OBSERVABLE = "n/a"  # what summary.csv writes where the history has no claim to read owners from
ACTS = ("task_reply", "state_share_sent", "request_completed", "task_start", "task_end", "forward_sent")
EFFECT = "task_end"

Scope = tuple[str, int | None]  # (request, hop): hop None for the centralised design's whole request


@dataclass(frozen=True)
class Stint:
    """One instance driving one request (hop) from `start` (its claim) to `end` (its last act after it)."""

    svc: str
    req: str
    hop: int | None
    start: float
    end: float
    acted: bool = True  # an act followed the claim (a stint without one drove nothing)

    def overlaps(self, other: Stint) -> bool:
        return (self.svc != other.svc and self.acted and other.acted
                and other.start < self.end and self.start < other.end)


@dataclass
class Anomalies:
    """What the history says of owners and effects (see the module docstring).

    `concurrent`: request -> the pairs of overlapping stints (of any of its hops); `double`: (request, task)
    -> the most times its effect was applied within one epoch (> 1 only); `unattributed`: effects no claim
    precedes, left out of `double`."""

    concurrent: dict[str, list[tuple[Stint, Stint]]] = field(default_factory=dict)
    double: dict[tuple[str, int], int] = field(default_factory=dict)
    unattributed: int = 0


def _int(value: object) -> int | None:
    """An integer field, or None (absent, or not an integer: the optional fields are not type-checked)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _claims(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if (e["kind"] == "takeover"
                                  or (e["kind"] == "request_received" and e.get("owner") == e["svc"]))
            and isinstance(e.get("req"), str)]


def stints(events: list[Event]) -> list[Stint]:
    """Every instance's stints of driving each request (hop), from the claims and acts of the history."""
    stored = _stored_shares(events)
    claims: dict[tuple[str, str], list[tuple[float, int | None]]] = defaultdict(list)
    for e in sorted(_claims(events), key=lambda e: e["t"]):
        claims[(e["svc"], e["req"])].append((e["t"], _int(e.get("task"))))
    ends: dict[tuple[str, str, int], float] = {}  # (svc, req, index of the claim) -> last act
    for e in events:
        if e["kind"] not in ACTS or not isinstance(e.get("req"), str):
            continue
        own = claims.get((e["svc"], e["req"]))
        if not own:
            continue  # a worker's task, or an instance acting without a claim the history shows
        if (e["kind"] == "state_share_sent" and id(e) not in stored) or e.get("already") is True:
            continue  # a share the peer ignored; a completion the BSS did not count (fenced: done before)
        at: float = stored[id(e)] if id(e) in stored else e["t"]  # a share acts when the peer stores it
        k = bisect_right([t for t, _ in own], at) - 1
        if k < 0:
            continue
        hop = own[k][1]
        if hop is not None and _int(e.get("task")) != hop:
            continue
        key = (e["svc"], e["req"], k)
        ends[key] = max(ends.get(key, at), at)
    return [Stint(svc, req, hop, start, max(start, ends.get((svc, req, k), start)), (svc, req, k) in ends)
            for (svc, req), own in claims.items() for k, (start, hop) in enumerate(own)]


def _stored_shares(events: list[Event]) -> dict[int, float]:
    """The `state_share_sent` events (by id) whose share the peer stored, with when it stored it: each matched,
    in time order, with an unmatched `state_share_received` of the same peer, request, task and owner before it
    (the peer records the share before it answers; a stale one it ignored has none)."""
    waiting: dict[tuple[object, ...], list[float]] = defaultdict(list)
    out: dict[int, float] = {}
    for e in sorted(events, key=lambda e: e["t"]):
        if e["kind"] == "state_share_received":
            waiting[(e["svc"], e.get("req"), _int(e.get("task")), e.get("owner"))].append(e["t"])
        elif e["kind"] == "state_share_sent":
            key = (e.get("peer"), e.get("req"), _int(e.get("task")), e["svc"])
            if waiting.get(key):
                out[id(e)] = waiting[key].pop(0)
    return out


def _by_scope(all_stints: Iterable[Stint]) -> dict[Scope, list[Stint]]:
    out: dict[Scope, list[Stint]] = defaultdict(list)
    for s in all_stints:
        out[(s.req, s.hop)].append(s)
    for group in out.values():
        group.sort(key=lambda s: s.start)
    return out


def _overlapping(group: list[Stint]) -> list[tuple[Stint, Stint]]:
    """The overlapping pairs of one scope's stints (sorted by start): each against those begun before its end."""
    pairs = []
    for i, a in enumerate(group):
        for b in group[i + 1:]:
            if b.start >= a.end:
                break
            if a.overlaps(b):
                pairs.append((a, b))
    return pairs


def _epochs(group: list[Stint]) -> list[float]:
    """The start of each derived epoch of one scope: its stints (sorted by start) merged where they overlap."""
    starts: list[float] = []
    end = float("-inf")
    for s in group:
        if not starts or s.start >= end:
            starts.append(s.start)
            end = s.end
        else:
            end = max(end, s.end)
    return starts


def _effects(events: list[Event]) -> list[tuple[Event, float]]:
    """Every effect (`task_end`) with the time its execution began: the `task_start` of the same executor,
    request and task, paired in order (its own time where none is left to pair)."""
    begun: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    out = []
    for e in sorted(events, key=lambda e: e["t"]):
        task = _int(e.get("task"))
        if task is None or not isinstance(e.get("req"), str):
            continue
        key = (e["svc"], e["req"], task)
        if e["kind"] == "task_start":
            begun[key].append(e["t"])
        elif e["kind"] == EFFECT:
            out.append((e, begun[key].pop(0) if begun[key] else e["t"]))
    return out


def anomalies(events: list[Event]) -> Anomalies | None:
    """Concurrent owners and double effects of a history, or None where it shows no claim (module docstring)."""
    if not _claims(events):
        return None
    scopes = _by_scope(stints(events))
    found = Anomalies()
    for (req, _), group in scopes.items():
        pairs = _overlapping(group)
        if pairs:
            found.concurrent.setdefault(req, []).extend(pairs)
    epochs = {scope: _epochs(group) for scope, group in scopes.items()}
    applied: dict[tuple[str, int, object], int] = defaultdict(int)
    for e, began in _effects(events):
        req, task = e["req"], e["task"]
        stamped = _int(e.get("epoch"))
        if stamped is not None:
            epoch: object = ("stamped", stamped)
        else:
            starts = epochs.get((req, task)) or epochs.get((req, None)) or []
            k = bisect_right(starts, began) - 1
            if k < 0:
                found.unattributed += 1
                continue
            epoch = ("derived", k)
        applied[(req, task, epoch)] += 1
    for (req, task, _), count in applied.items():
        if count > 1:
            found.double[(req, task)] = max(count, found.double.get((req, task), 0))
    return found


def columns(found: Anomalies | None) -> dict[str, int | str]:
    """summary.csv's cells (ANOMALY_COLUMNS): how many requests had two owners at once, how many tasks were
    applied twice in one epoch; `n/a` where the history cannot say."""
    if found is None:
        return dict.fromkeys(ANOMALY_COLUMNS, NOT_OBSERVABLE)
    return dict(zip(ANOMALY_COLUMNS, (len(found.concurrent), len(found.double)), strict=True))
