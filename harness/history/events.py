"""What a recorded event is, and the history as a list of them: reading events.jsonl back (a torn last line
skipped), the measured part without the warm-up workflows, and when the measured load started."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


def read(path: Path) -> list[Event]:
    """A recorded history, skipping a torn last line."""
    events = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def measured(events: list[Event]) -> list[Event]:
    """The history without its warm-up workflows: every event of a request the BSS submitted with
    `warmup: true` is left out, so no figure, count or check ever sees them (events.jsonl keeps them)."""
    warm = {e["req"] for e in events if e.get("warmup") and e["kind"] == "submitted"}
    if not warm:
        return events
    return [e for e in events if e.get("req") not in warm]


def load_start(events: list[Event]) -> float:
    """When the measured load started (after settling and warm-up: harness.experiment.warmup), else `ready`."""
    marks = [e["t"] for e in events if e["svc"] == "harness" and e["kind"] in ("load_start", "ready")]
    return max(marks, default=float("-inf"))
