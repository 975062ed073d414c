"""Pure functions over a recorded history (Jepsen-style): what was lost, duplicated, redone, and how fast
the system noticed and recovered. No I/O and no clocks: the same history always gives the same verdict.

Conventions of the history (see targets/ and harness/load/bss.py): the BSS records `submitted` and `completed`
(one `completed` per notice, so a workflow completed twice shows twice); whoever executes a task records
`task_start`/`task_end` (workers, modules, the monolith); SLMs record `task_call`/`task_reply`, `takeover`,
`state_share_*`; the failure detectors record `peer_dead`; the harness records each `fault`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.history import Event
from protocol.events import FAULT_END, FAULT_START


def of_kind(events: Iterable[Event], *kinds: str, svc: str | None = None) -> list[Event]:
    return [e for e in events if e["kind"] in kinds and (svc is None or e["svc"] == svc)]


def submitted(events: Iterable[Event]) -> dict[str, float]:
    """Request -> time the BSS submitted it (first submission)."""
    out: dict[str, float] = {}
    for e in of_kind(events, "submitted", svc="bss"):
        out.setdefault(e["req"], e["t"])
    return out


def completions(events: Iterable[Event]) -> dict[str, list[Event]]:
    """Request -> every completion notice the BSS received for it, in order."""
    out: dict[str, list[Event]] = defaultdict(list)
    for e in of_kind(events, "completed", svc="bss"):
        out[e["req"]].append(e)
    return dict(out)


def lost(events: list[Event]) -> list[str]:
    """Submitted requests the BSS never heard back about."""
    done = completions(events)
    return sorted(r for r in submitted(events) if r not in done)


def duplicated(events: list[Event]) -> dict[str, int]:
    """Requests completed more than once, with how often: never merged, always reported."""
    return {r: len(c) for r, c in completions(events).items() if len(c) > 1}


def executions(events: Iterable[Event]) -> Counter[tuple[str, int]]:
    """(request, task) -> how many times the task started, counted where the work is done."""
    return Counter((e["req"], e["task"]) for e in of_kind(events, "task_start"))


def reexecuted(events: list[Event]) -> dict[tuple[str, int], int]:
    return {key: count for key, count in executions(events).items() if count > 1}


def latencies(events: list[Event]) -> dict[str, float]:
    """Request -> seconds from submission to its first completion notice (wall seconds, unscaled)."""
    sub = submitted(events)
    return {r: c[0]["t"] - sub[r] for r, c in completions(events).items() if r in sub}


def processed_by(events: list[Event]) -> dict[str, set[str]]:
    """Request -> every instance that drove its first task: the SLMs that called it (centralised), else
    whoever ran it (an instance of m_1, or the monolith)."""
    called: dict[str, set[str]] = defaultdict(set)
    ran: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["kind"] == "task_call" and e["task"] == 1:
            called[e["req"]].add(e["svc"])
        elif e["kind"] == "task_start" and e.get("task") == 1:
            ran[e["req"]].add(e["svc"])
    return {req: called.get(req) or ran[req] for req in {*called, *ran}}


def takeovers(events: Iterable[Event]) -> list[Event]:
    return of_kind(events, "takeover")


@dataclass
class Detection:
    """How long the survivors took to declare a killed instance dead."""

    target: str
    killed_at: float
    declared_at: float | None
    by: str | None

    @property
    def delay(self) -> float | None:
        return None if self.declared_at is None else self.declared_at - self.killed_at


def detections(events: list[Event]) -> list[Detection]:
    """For each kill the harness made, the first `peer_dead` naming the victim after it. The victim's end is
    the kill, or, at `--fault-at worst`, the moment it fell silent after its last heartbeat (`silent_at`:
    from then on it sent nothing, and the kill follows once the survivors acknowledged that heartbeat)."""
    out = []
    for fault in of_kind(events, "fault", svc="harness"):
        if fault.get("action") != "kill":
            continue
        ended: float = fault.get("silent_at") or fault["t"]
        dead = [e for e in of_kind(events, "peer_dead") if e["peer"] == fault["target"] and e["t"] >= ended]
        first = min(dead, key=lambda e: e["t"], default=None)
        declared, by = (first["t"], first["svc"]) if first else (None, None)
        out.append(Detection(fault["target"], ended, declared, by))
    return out




def fault_times(events: Iterable[Event]) -> list[float]:
    return [e["t"] for e in events if e["svc"] == "harness" and e["kind"] == "fault" and e.get("action") in FAULT_START]


def fault_windows(events: list[Event]) -> list[tuple[str, float, float]]:
    """(target, start, end) of each fault: a crash is an instant, a pause/delay/cut lasts until undone."""
    windows = []
    faults = [e for e in events if e["svc"] == "harness" and e["kind"] == "fault"]
    for e in faults:
        if e.get("action") in FAULT_START:
            end = next((f["t"] for f in faults if f["t"] >= e["t"] and f.get("action") in FAULT_END
                        and f.get("target") == e["target"]), e["t"])
            windows.append((e["target"], e["t"], end))
    return windows


def false_suspicions(events: list[Event], grace: float, since: float = -math.inf) -> list[Event]:
    """`peer_dead` events (after `since`) that no fault explains: the peer was not killed before, and no
    pause, cut or delay was under way then or had ended less than `grace` seconds before (a partition makes
    both sides suspect each other: that is the fault's doing, not the detector's). What is left is the
    detector mistaking a slow peer (CPU starvation, a loaded machine, too small a t_h) for a dead one."""
    kills: dict[str, float] = {}
    windows = []
    for target, start, end in fault_windows(events):
        if start == end:
            kills[target] = min(start, kills.get(target, math.inf))
        else:
            windows.append((start, end + grace))
    out = []
    for e in of_kind(events, "peer_dead"):
        if e["t"] < since or e["t"] >= kills.get(e["peer"], math.inf):
            continue
        if any(start <= e["t"] <= end for start, end in windows):
            continue
        out.append(e)
    return out


def broker_windows(events: list[Event]) -> list[tuple[float, float]]:
    """(start, end) of each broker fault (a `fault` whose name starts with `broker-`: harness/faults/broker.py)."""
    starts = {e["t"] for e in events if e["svc"] == "harness" and e["kind"] == "fault"
              and str(e.get("fault", "")).startswith("broker-")}
    return [(start, end) for _, start, end in fault_windows(events) if start in starts]


def broker_suspicions(events: list[Event], grace: float) -> list[Event]:
    """`peer_dead` events a broker fault explains: declared while the broker was gone, frozen or cut off (or
    less than `grace` seconds after). Real consequences of a shared broker, not the detector's mistakes: they
    are reported apart from the false suspicions (which never count them)."""
    windows = broker_windows(events)
    return [e for e in of_kind(events, "peer_dead") if any(s <= e["t"] <= end + grace for s, end in windows)]


def broker_recovery(events: list[Event]) -> float:
    """Wall seconds from the end of the first broker fault to the last service plane connected again
    (`broker_back`); NaN without a broker fault or when nothing had to reconnect."""
    windows = broker_windows(events)
    if not windows:
        return math.nan
    end = windows[0][1]
    back = [e["t"] for e in of_kind(events, "broker_back") if e["t"] >= windows[0][0]]
    return max(back) - end if back else math.nan


@dataclass
class Verdict:
    """The headline of a history: what a reliability engineer reads first.

    `status` is Jepsen's three-valued answer: "fail" when a workflow was lost or completed twice, else
    "unknown" when the history has holes (events a service could not send, lines the collector could not
    read, packets the capture dropped: what is missing might have shown a failure), else "pass"."""

    requests: int
    completed: int
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    reexecuted_tasks: int = 0
    takeovers: int = 0
    holes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated

    @property
    def status(self) -> str:
        if not self.ok:
            return "fail"
        return "unknown" if any(self.holes.values()) else "pass"


def verdict(events: list[Event], holes: dict[str, int] | None = None) -> Verdict:
    done = completions(events)
    redo = reexecuted(events)
    return Verdict(
        requests=len(submitted(events)),
        completed=len(done),
        lost=lost(events),
        duplicated=duplicated(events),
        reexecuted_tasks=sum(count - 1 for count in redo.values()),
        takeovers=len(takeovers(events)),
        holes=dict(holes or {}),
    )
