"""Reading a recorded history back, counting every line that is not an event instead of skipping it.

A line of events.jsonl is an event when it is one JSON object with a finite number `t`, strings `svc` and
`kind`, a `kind` the protocol knows (protocol.events.KINDS), and the fields that kind must carry, of the
types the checker reads. Anything else is a hole in the evidence, counted by what it is:

- `torn_lines`: the last line has no newline (a writer killed mid-line) or a line cut short;
- `unreadable_lines`: not JSON, not UTF-8, not an object, or missing/mistyped `t`, `svc`, `kind`;
- `unknown_kinds`: an object whose `kind` the protocol does not define;
- `malformed_events`: a known kind without a field it must carry (e.g. a `completed` without `req`).

The verdict (harness.checker) treats any of them as a hole: what could not be read might have shown a loss
or a duplicate, so a history with one is never a `pass`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.history.events import Event
from harness.history.guarded import read_bytes
from protocol.events import KINDS, is_event

# the type each field must have wherever a kind requires it (protocol.events.KINDS: the fields without `?`);
# a field not named here may hold anything
_STR, _INT, _NUM = (str,), (int,), (int, float)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("req", "peer", "owner", "worker", "name", "dead", "by", "plane", "path", "error",
                     "fault", "action", "target", "design", "run", "backend", "address", "role"), _STR),
    **dict.fromkeys(("task", "seq", "attempt", "lost", "from_task", "n", "peers"), _INT),
    **dict.fromkeys(("bytes", "bytes_out", "bytes_in", "down_for", "silent_for", "started_in", "waited"), _NUM),
}


def _required(fields: str) -> dict[str, tuple[type, ...]]:
    names = [f.strip() for f in fields.split(",")]
    return {name: FIELD_TYPES.get(name, (object,)) for name in names if name and not name.endswith("?")
            and name != "..."}


# every kind's required fields, from the protocol's own list (written once, there)
REQUIRED_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {kind: _required(k.fields) for kind, k in KINDS.items()}
HOLE_KINDS = ("torn_lines", "unreadable_lines", "unknown_kinds", "malformed_events")


@dataclass
class HistoryFile:
    """The events of one events.jsonl, and what in it was not an event (see the module docstring)."""

    events: list[Event] = field(default_factory=list)
    lines: int = 0
    holes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HOLE_KINDS, 0))


def classify(obj: object) -> str | None:
    """None for an event, else the hole it is (a key of HOLE_KINDS)."""
    if not is_event(obj) or not isinstance(obj, dict):  # (an event is a dict: is_event says so first)
        return "unreadable_lines"
    kind = obj["kind"]
    if kind not in KINDS:
        return "unknown_kinds"
    for name, types in REQUIRED_FIELDS[kind].items():
        if name not in obj:
            return "malformed_events"
        value = obj[name]
        if types != (object,) and (not isinstance(value, types) or isinstance(value, bool)
                                   or (isinstance(value, float) and not math.isfinite(value))):
            return "malformed_events"
    return None


def parse_line(raw: bytes) -> tuple[Event | None, str | None]:
    """One line (without its newline): the event, or the hole it is."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        return None, "unreadable_lines"
    hole = classify(obj)
    return (obj, None) if hole is None else (None, hole)


def read_history(path: Path | str) -> HistoryFile:
    """events.jsonl read back with every non-event counted (a missing or unreadable file: RecordFileError)."""
    data = read_bytes(path)
    out = HistoryFile()
    lines = data.split(b"\n")
    last = lines.pop()  # b"" when the file ends with a newline, as every whole history does
    for raw in lines:
        out.lines += 1
        if not raw.strip():
            out.holes["unreadable_lines"] += 1
            continue
        event, hole = parse_line(raw)
        if event is None:
            out.holes[hole or "unreadable_lines"] += 1
        else:
            out.events.append(event)
    if last:
        out.lines += 1
        out.holes["torn_lines"] += 1  # a writer killed mid-line: whatever the fragment says, it is not whole
    return out
