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


@dataclass(frozen=True)
class Evidence:
    """What the history's folder says about the history itself (harness.history.record, .manifest, .reading):
    how many requests the run was configured to submit and whether its files are the ones the run sealed.
    `expected_requests` None: not known (a history checked on its own), so the submissions are not checked."""

    expected_requests: int | None = None
    sealed: bool = True  # False: the folder was never sealed (a run that did not close, or a hand-made folder)
    integrity: tuple[str, ...] = ()  # files that differ from the seal (harness.history.manifest.check)


# the one kind of hole that cannot hide a workflow's notice: the capture's dropped packets are bytes on the
# wire, not events; every other hole might have been a `completed` line
CANNOT_HIDE_NOTICES = "capture_drops"


@dataclass
class Verdict:
    """The headline of a history: what a reliability engineer reads first.

    `status` is Jepsen's three-valued answer, with its reasons (docs/checker.md, "Evidence rules"):
    - "fail" when the history proves a failure: a request completed twice (two notices are in it, whatever
      else is missing), or a submitted request never completed while nothing could hide its notice;
    - else "unknown" when the evidence cannot support a pass: an empty history, fewer or more submissions than
      the run was configured for (cut short, or two runs in one folder), holes of any kind (events a service
      could not send, lines that are not events, packets the capture dropped), a loss that a hole could
      explain, completions of requests never submitted, or a folder that is not the one the run sealed;
    - else "pass"."""

    requests: int
    completed: int
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    reexecuted_tasks: int = 0
    takeovers: int = 0
    holes: dict[str, int] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)
    unsubmitted: list[str] = field(default_factory=list)  # completed, never submitted

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated

    @property
    def doubts(self) -> list[str]:
        """Why the evidence cannot support a pass (empty when it can)."""
        out = list(self.evidence.integrity)
        if not self.evidence.sealed:
            out.append("the run folder was never sealed (no manifest.json): the run did not close")
        if self.requests == 0:
            out.append("empty history: no request was submitted")
        expected = self.evidence.expected_requests
        if expected is not None and self.requests != expected:
            out.append(f"{self.requests} of {expected} configured requests were submitted"
                       + (": the history is cut short" if self.requests < expected
                          else ": more than configured (two runs in one folder?)"))
        for kind, count in sorted(self.holes.items()):
            if count:
                out.append(f"{count} {kind.replace('_', ' ')}")
        if self.unsubmitted:
            out.append(f"{len(self.unsubmitted)} completion(s) of requests never submitted")
        return out

    @property
    def proven(self) -> list[str]:
        """The failures the history proves, whatever else it lacks."""
        out = []
        if self.duplicated and not self.evidence.integrity:
            out.append(f"{len(self.duplicated)} request(s) completed more than once")
        hidden = (self.evidence.integrity or not self.evidence.sealed
                  or any(count for kind, count in self.holes.items() if kind != CANNOT_HIDE_NOTICES))
        if self.lost and not hidden:
            out.append(f"{len(self.lost)} submitted request(s) never completed")
        return out

    @property
    def status(self) -> str:
        if self.proven:
            return "fail"
        return "unknown" if self.doubts or not self.ok else "pass"

    @property
    def reason(self) -> str:
        """One line: what the status rests on."""
        if self.proven:
            return "; ".join(self.proven)
        doubts = self.doubts
        if self.lost:  # lost, but a hole could hide the notices
            doubts = [f"{len(self.lost)} request(s) without a completion, which the holes could hide", *doubts]
        return "; ".join(doubts)


def verdict(events: list[Event], holes: dict[str, int] | None = None, evidence: Evidence | None = None) -> Verdict:
    done = completions(events)
    redo = reexecuted(events)
    sub = submitted(events)
    return Verdict(
        requests=len(sub),
        completed=sum(1 for r in done if r in sub),
        lost=lost(events),
        duplicated=duplicated(events),
        reexecuted_tasks=sum(count - 1 for count in redo.values()),
        takeovers=len(takeovers(events)),
        holes=dict(holes or {}),
        evidence=evidence or Evidence(),
        unsubmitted=sorted(r for r in done if r not in sub),
    )
