"""The experiment's one history: every event of every service, the BSS and the harness, with timestamps.

Services stream JSON lines over TCP to the `Collector`, which appends each event to `events.jsonl` as it
arrives (so a run killed half-way leaves a valid prefix) and hands it to subscribers: fault triggers such as
"kill SLM-A right after task 3 of request R" are subscribers. Every figure of a run is derived from this
history afterwards, by pure functions (`harness.checker`).

What is where (the names of the first two are also this package's, so `history.measured(...)` reads the same):
- `events`: what an event is (`Event`, `Predicate`), reading events.jsonl back (`read`), the measured part
  without the warm-up workflows (`measured`) and when the measured load started (`load_start`);
- `collector`: the `Collector`, the sink the services stream to;
- `record`: the run folder as a record; `manifest`: its seal; `guarded` and `reading`: the one guarded reader
  of its files; `flows`: wire.csv's flows (these are imported by their own names).
"""

from __future__ import annotations

from harness.history.collector import Collector
from harness.history.events import Event, Predicate, load_start, measured, read

__all__ = ["Collector", "Event", "Predicate", "load_start", "measured", "read"]
