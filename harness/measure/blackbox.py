"""The figures of a target that says nothing of itself (`instrumented: false`): only what the client saw and
what crossed the wire, Jepsen's way. summary.csv has the same columns as for our designs, so sweeps, fits
and reports read both; every figure that needs the target's events is "n/a", never 0.

From the client's history (the BSS's `submitted` and `completed`, a python client's `failed` and
`indeterminate`):
- t_c: the mean time of the workflows no fault touched; a workflow is touched when it was in flight (submitted
  and not yet completed) at any moment of a fault's window (a crash: its instant; a pause, cut or delay:
  until it was undone). From outside, which instance drove a workflow is unknown, so every workflow in flight
  counts, not only the victim's.
- t_r: the slowest completion among the touched workflows, and infinite (`inf`, R_r too) when one of them
  never completed: a stuck or lost workflow has not recovered, so no finite figure may stand for it (the
  survivors' slowest would read as a recovery time); lost (accepted, never completed), duplicated
  (completed twice), failed and indeterminate (what a python client reported), and the verdict, with the
  same evidence rules as ever (harness.checker).
From the wire (each plane's bytes: a link's plane says which, the target file whether it counts to B_op or
B_rel):
- B_op: the operational planes' bytes per completed workflow over t_c (the paper's definition: one workflow's
  messages over its duration), kB/s;
- B_rel: the reliability planes' bytes per second from ready to teardown (heartbeats and state at the run's
  load: from outside, a share cannot be told from a heartbeat), kB/s; B_tot their sum.
Model columns are filled only where the target file gives the paper's parameters (`z:` keys the model reads;
run settings such as users and requests alone are not a model).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from harness import checker, history
from harness.history import Event
from harness.history.record import Record
from harness.measure.attribution import by_endpoint
from harness.plan.config import Experiment
from harness.plan.deploy import Deployment
from harness.plan.target import TargetFile

NA = "n/a"
KB = 1000.0
# summary.csv's columns a black-box run cannot fill: each needs events from inside the target
NEEDS_EVENTS = ("reexecuted_tasks", "takeovers", "detection_delay", "false_suspicions", "broker_suspicions",
                "broker_recovery", "cpu_ratio_to_monolith", "wire_vs_service_op", "wire_vs_service_state",
                "header_bytes_per_message", "t_m_measured", "R_a_measured", "Q_r_compute", "instances_extra")
# the paper's parameters in summary.csv: the target's only where its file gives them (`z:`)
PARAMETERS = ("mechanism", "n", "k", "h_r", "t_h", "s_p", "s_o")


def model_keys() -> frozenset[str]:
    """The keys of z the model reads: the Experiment's fields declared before its run settings (config.py
    groups them: `runtime` opens "how an experiment is run"), time_scale aside. A target file whose `z:` holds
    none of them (only users, requests, ...) gives no model to stand beside the measurement."""
    fields = list(Experiment.model_fields)
    return frozenset(fields[: fields.index("runtime")]) - {"time_scale"}


def touched(events: list[Event]) -> set[str]:
    """Workflows in flight at any moment of a fault's window (see the module docstring)."""
    sub = checker.submitted(events)
    done = checker.completions(events)
    hit: set[str] = set()
    for _, start, end in checker.fault_windows(events):
        for req, t0 in sub.items():
            finish = done[req][0]["t"] if req in done else math.inf
            if t0 <= end and start <= finish:
                hit.add(req)
    return hit


def times(events: list[Event], time_scale: float) -> dict[str, float]:
    """t_c and t_r in paper seconds (see the module docstring)."""
    lat = {r: v / time_scale for r, v in checker.latencies(events).items()}
    hit = touched(events)
    clean = [v for r, v in lat.items() if r not in hit]
    worst = [lat.get(r, math.inf) for r in hit]  # one that never completed has not recovered: inf
    return {"t_c": statistics.fmean(clean) if clean else math.nan, "t_r": max(worst) if worst else math.nan,
            "clean": len(clean), "touched": len(hit)}


def plane_bytes(deployment: Deployment, record: Record) -> dict[str, int]:
    """Payload bytes on the wire per plane, both directions, over the whole capture (every link of the
    deployment: the instances' to their peers, the client's to the entries)."""
    if record.flows is None:
        return {}
    dialled = {link.name: link.address for link in deployment.links}
    counted = by_endpoint(record.flows, dialled)
    out: dict[str, int] = {}
    for link in deployment.links:
        c = counted[link.name]
        out[link.plane] = out.get(link.plane, 0) + c["to"] + c["from"]
    return out


def bandwidth(record: Record, target: TargetFile, t_c: float, completions: int) -> dict[str, float]:
    """B_op, B_rel, B_tot in kB/s (paper seconds), or NaN without a capture (see the module docstring)."""
    planes = plane_bytes(record.deployment, record)
    if not planes:
        return {"B_op": math.nan, "B_rel": math.nan, "B_tot": math.nan}
    span = _span(record.events) / record.z.time_scale
    op = sum(b for p, b in planes.items() if target.counts_to(p) == "op")
    rel = sum(b for p, b in planes.items() if target.counts_to(p) == "rel")
    b_op = op / KB / completions / t_c if completions and t_c > 0 else math.nan
    b_rel = rel / KB / span if span > 0 else math.nan
    return {"B_op": b_op, "B_rel": b_rel, "B_tot": b_op + b_rel}


def _span(events: list[Event]) -> float:
    """Wall seconds from `ready` to `down` (the capture's useful span), or NaN."""
    ready = next((e["t"] for e in events if e["svc"] == "harness" and e["kind"] == "ready"), None)
    down = next((e["t"] for e in reversed(events) if e["svc"] == "harness" and e["kind"] == "down"), None)
    return down - ready if ready is not None and down is not None else math.nan


# summary.csv's columns of client_outcomes
CLIENT_COUNTS = ("failed", "indeterminate", "client_actions", "end_states")


def affected_rows(events: list[Event], time_scale: float, t_c: float) -> list[dict[str, object]]:
    """affected.csv for a black-box target: per workflow in flight during a fault, its completion time, the
    time it lost against t_c, and how often it completed (who resumed it is not known from outside)."""
    lat = {r: v / time_scale for r, v in checker.latencies(events).items()}
    done = checker.completions(events)
    return [{"req": req, "latency": lat.get(req, math.nan), "lost_time": lat.get(req, math.nan) - t_c,
             "completions": len(done.get(req, [])), "takeovers": NA} for req in sorted(touched(events))]


def client_outcomes(events: list[Event]) -> dict[str, int | str]:
    """What a python client reported beside completions: `failed` (the target said no) and `indeterminate`
    (nobody can tell), per request; the client's recorded actions (an operator's retry...); and the target's
    own names for how those workflows ended, counted (`FAILED_TEMP=2 PROCESSING=1`: stuck, falsely failed...),
    so that a behaviour is named in summary.csv, not only counted as a loss."""
    measured = history.measured(events)
    ends = [e for e in measured if e["kind"] in ("failed", "indeterminate")]
    states: dict[str, int] = {}
    for e in ends:
        state = str(e.get("state") or "?").replace(" ", "_")
        states[state] = states.get(state, 0) + 1
    with_error = sum(1 for e in measured if e["kind"] == "completed" and e.get("error"))
    if with_error:  # done, but the target said something went wrong on the way (a false failure healed)
        states["COMPLETED_WITH_ERROR"] = with_error
    return {"failed": len({e["req"] for e in ends if e["kind"] == "failed"}),  # CLIENT_COUNTS
            "indeterminate": len({e["req"] for e in ends if e["kind"] == "indeterminate"}),
            "client_actions": sum(1 for e in measured if e["kind"] == "client_action"),
            "end_states": " ".join(f"{k}={v}" for k, v in sorted(states.items()))}


def fill(row: Mapping[str, object], record: Record, target: TargetFile) -> dict[str, Any]:
    """summary.csv's row of our designs (`row`, computed from a history without the target's events) made
    honest for a black-box target: its own times and bytes, "n/a" where events would be needed."""
    events = history.measured(record.events)
    measured = times(events, record.z.time_scale)
    completions = sum(len(c) for c in checker.completions(record.events).values())
    bw = bandwidth(record, target, measured["t_c"], completions)
    out = dict(row)
    out.update({key: NA for key in NEEDS_EVENTS})
    out.update({key: row[key] if key in target.z else NA for key in PARAMETERS})
    out.update({"design": f"target:{target.name}", "t_c_measured": measured["t_c"],
                "t_r_measured": measured["t_r"],
                "R_r_measured": measured["t_r"] / measured["t_c"] if measured["t_c"] else math.nan,
                **{f"{key}_measured": value for key, value in bw.items()}})
    if not model_keys() & set(target.z):  # no paper parameters: no model to stand beside the measurement
        out.update({key: NA for key in out if "_model" in key})
    return out
