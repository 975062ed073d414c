"""How the failure detectors did: the delay from each kill to the first survivor declaring the victim dead, the
suspicions no fault explains (a slow peer taken for a dead one), and those a broker fault does explain."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.checker.fault_timeline import broker_windows, fault_windows
from harness.checker.outcomes import of_kind
from harness.history import Event


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


def broker_suspicions(events: list[Event], grace: float) -> list[Event]:
    """`peer_dead` events a broker fault explains: declared while the broker was gone, frozen or cut off (or
    less than `grace` seconds after). Real consequences of a shared broker, not the detector's mistakes: they
    are reported apart from the false suspicions (which never count them)."""
    windows = broker_windows(events)
    return [e for e in of_kind(events, "peer_dead") if any(s <= e["t"] <= end + grace for s, end in windows)]
