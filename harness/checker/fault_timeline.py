"""When the harness's faults were under way, read from its own `fault` events: the instants of kills and the
windows of pauses, delays and cuts (each lasts until undone), the broker's windows among them, and how long the
service planes took to reconnect after a broker fault."""

from __future__ import annotations

import math
from collections.abc import Iterable

from harness.checker.outcomes import of_kind
from harness.history import Event
from protocol.events import FAULT_END, FAULT_START


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


def broker_windows(events: list[Event]) -> list[tuple[float, float]]:
    """(start, end) of each broker fault (a `fault` whose name starts with `broker-`: faults/broker.py)."""
    starts = {e["t"] for e in events if e["svc"] == "harness" and e["kind"] == "fault"
              and str(e.get("fault", "")).startswith("broker-")}
    return [(start, end) for _, start, end in fault_windows(events) if start in starts]


def broker_recovery(events: list[Event]) -> float:
    """Wall seconds from the end of the first broker fault to the last service plane connected again
    (`broker_back`); NaN without a broker fault or when nothing had to reconnect."""
    windows = broker_windows(events)
    if not windows:
        return math.nan
    end = windows[0][1]
    back = [e["t"] for e in of_kind(events, "broker_back") if e["t"] >= windows[0][0]]
    return max(back) - end if back else math.nan
