"""Pure functions over a recorded history (Jepsen-style): what was lost, duplicated, redone, and how fast
the system noticed and recovered. No I/O and no clocks: the same history always gives the same verdict.

Conventions of the history (see targets/ and harness/load/bss.py): the BSS records `submitted` and `completed`
(one `completed` per notice, so a workflow completed twice shows twice); whoever executes a task records
`task_start`/`task_end` (workers, modules, the monolith); SLMs record `task_call`/`task_reply`, `takeover`,
`state_share_*`; the failure detectors record `peer_dead`; the harness records each `fault`.

What is where (every name below is also this package's, so `checker.verdict(...)` reads the same):
- `outcomes`: what became of each request: submitted, completions, lost, duplicated, executions, reexecuted,
  latencies, processed_by, takeovers (and `of_kind`, the filter they all use);
- `fault_timeline`: when the harness's faults were under way: fault_times, fault_windows, broker_windows, and
  broker_recovery after a broker fault;
- `anomalies`: the safety anomalies a takeover must not allow (issue 22): Anomalies and anomalies (two owners
  driving one request at once, a task's effect applied twice in one request epoch), the stints of driving
  they are read from (Stint, stints), and summary.csv's cells (ANOMALY_COLUMNS, anomaly_columns);
- `detection`: the failure detectors: Detection and detections (kill to declared dead), false_suspicions,
  broker_suspicions;
- `verdicts`: the headline: Evidence (what the run folder says of itself), Verdict with its evidence rules,
  and `verdict`, which builds one from a history.
"""

from __future__ import annotations

from harness.checker.anomalies import ANOMALY_COLUMNS, Anomalies, Stint, anomalies, stints
from harness.checker.anomalies import columns as anomaly_columns
from harness.checker.detection import Detection, broker_suspicions, detections, false_suspicions
from harness.checker.fault_timeline import broker_recovery, broker_windows, fault_times, fault_windows
from harness.checker.outcomes import (
    completions,
    duplicated,
    executions,
    latencies,
    lost,
    of_kind,
    processed_by,
    reexecuted,
    submitted,
    takeovers,
)
from harness.checker.verdicts import CANNOT_HIDE_NOTICES, Evidence, Verdict, verdict

__all__ = [
    "ANOMALY_COLUMNS",
    "CANNOT_HIDE_NOTICES",
    "Anomalies",
    "Detection",
    "Evidence",
    "Stint",
    "Verdict",
    "anomalies",
    "anomaly_columns",
    "broker_recovery",
    "broker_suspicions",
    "broker_windows",
    "completions",
    "detections",
    "duplicated",
    "executions",
    "false_suspicions",
    "fault_times",
    "fault_windows",
    "latencies",
    "lost",
    "of_kind",
    "processed_by",
    "reexecuted",
    "stints",
    "submitted",
    "takeovers",
    "verdict",
]
