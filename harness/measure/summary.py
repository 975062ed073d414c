"""Every table of a run, as a pure function of its record (`harness.history.record`): summary.csv's row, links.csv,
affected.csv and cpu.csv.

`harness run` and `harness analyse` both go through `derive`, on the record read back from the run folder,
so a run's own figures and any later re-analysis are the same computation on the same data: a fix to a
metric or a new model reading reaches old runs by re-analysing them.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import checker, history, model
from harness.history.flows import Flow
from harness.history.record import Record
from harness.measure import blackbox, metrics
from harness.measure.attribution import by_endpoint
from harness.model import bus, registry
from harness.plan.deploy import Deployment
from harness.state import write_atomic

_Q_R, _Q_R_COMPUTE = registry.BY_NAME["Q_r"], registry.BY_NAME["Q_r_compute"]
SUMMARY_COLUMNS = [
    "run", "design", "mechanism", "fault", "fault_at", "runtime", "link_backend", "n", "k", "h_r", "t_h", "s_p",
    "s_o", "time_scale", "requests", "completed", "lost", "duplicated", *checker.ANOMALY_COLUMNS,
    *blackbox.CLIENT_COUNTS,
    "reexecuted_tasks", "takeovers",
    "verdict", "verdict_reason", "history_holes", "refused",
    "detection_delay", "false_suspicions", *registry.summary_columns(),
    *(registry.BY_NAME[m].bus_column for m in registry.BUS), "broker_suspicions", "broker_recovery",
    "cpu_ratio_to_monolith", _Q_R.model_column, _Q_R.measured, _Q_R_COMPUTE.measured,
    "host_busy", "host_busy_p90", "host_full", "saturated", "clock_uncertainty",
    "wire_source", "wire_vs_service_op", "wire_vs_service_state", "header_bytes_per_message", "harness_cpu_share",
]
AFFECTED_COLUMNS = ["req", "latency", "lost_time", "completions", "takeovers"]


@dataclass
class Tables:
    """What `derive` gives: the summary row, and the rows of links.csv, affected.csv and cpu.csv."""

    summary: dict[str, Any]
    links: list[dict[str, Any]]
    affected: list[dict[str, Any]]
    cpu: list[dict[str, Any]]
    verdict: checker.Verdict


def wire_by_link(deployment: Deployment, flows: list[Flow]) -> dict[str, dict[str, int]]:
    """Captured bytes per link: towards and from the address the link's source dials: its proxy, or (netem:
    no proxy) the target itself, from the source's address. With containers the capture watches the bridge,
    which host-to-host links (the BSS's hop 0 through the proxy) never cross."""
    on_host = {"bss"} if deployment.z.runtime != "local" else set()
    bind = {s.id: s.bind for s in deployment.services}
    links = [link for link in deployment.links if link.src not in on_host]
    endpoints = {link.name: link.address for link in links if link.address != link.target or link.src in bind}
    clients = {link.name: bind[link.src] for link in links if link.address == link.target and link.src in bind}
    return by_endpoint(flows, endpoints, clients)


def holes(record: Record) -> dict[str, int]:
    """What the history is known to lack: events a service could not send (it says so once it can again),
    lines the collector could not read, lines of events.jsonl that are not events (torn, unreadable, of an
    unknown kind, malformed: harness.history.reading), packets the capture's kernel socket dropped (when its
    flows count)."""
    capture = record.counters.capture
    return {
        "events_lost": sum(int(e.get("lost", 0)) for e in record.events if e["kind"] == "events_lost"),
        "collector_bad_lines": int(record.counters.collector_bad_lines),
        **record.history_holes,
        "capture_drops": int(capture.get("kernel_drops", 0) or 0) if capture.get("flows_used") else 0,
    }


def derive(record: Record) -> Tables:
    """The run's tables from its record alone (see the module docstring)."""
    z, deployment, counters = record.z, record.deployment, record.counters
    events = history.measured(record.events)
    gaps = holes(record)
    verdict = checker.verdict(events, holes=gaps, evidence=record.evidence)
    measured = metrics.times(events, z)
    t_c = measured["t_c"]
    bw = metrics.bandwidth(events, deployment, t_c)
    # links.csv sets the proxies' and the wire's counts, which span the whole run, warm-up included, beside
    # what the services counted over the same span: the raw history, not the measured one
    wire = wire_by_link(deployment, record.flows) if record.flows is not None else None
    links = metrics.link_rows(deployment, counters.proxy, record.events, wire)
    source = metrics.byte_source(links)
    cpu = counters.cpu
    cpu_rows = [{"service": name, "role": deployment.roles.get(name, "harness"), "user_s": u, "system_s": s,
                 "total_s": u + s} for name, (u, s) in sorted(cpu.items())]
    overhead = metrics.header_overhead(links, source)
    agree = metrics.wire_agreement(links, overhead, source)
    cpu_wf = metrics.cpu_per_workflow(cpu, deployment.roles, verdict.completed)
    delays = [d.delay for d in checker.detections(events) if d.delay is not None]
    m = model.evaluate(z)
    ref = record.reference
    t_m = ref["t_m"]
    row = {
        "run": record.run, "design": z.design, "mechanism": z.mechanism, "fault": z.fault, "fault_at": z.fault_at,
        "runtime": z.runtime, "link_backend": record.link_backend, "n": z.n, "k": z.k, "h_r": z.h_r, "t_h": z.t_h,
        "s_p": z.s_p, "s_o": z.s_o, "time_scale": z.time_scale, "requests": verdict.requests,
        "completed": verdict.completed, "lost": len(verdict.lost), "duplicated": len(verdict.duplicated),
        **checker.anomaly_columns(verdict.anomalies),  # "n/a" where the history shows no owner (black box)
        **blackbox.client_outcomes(record.events),
        "reexecuted_tasks": verdict.reexecuted_tasks, "takeovers": verdict.takeovers,
        "verdict": verdict.status, "verdict_reason": verdict.reason, "history_holes": sum(gaps.values()),
        "refused": sum(int(v) for v in counters.refused.values()),
        "detection_delay": delays[0] / z.time_scale if delays else math.nan,
        "false_suspicions": len(checker.false_suspicions(events, grace=2 * (z.t_h or 0) * z.time_scale + 0.5,
                                                         since=history.load_start(events))),
        **measured_beside_model({"t_m": t_m, "t_c": t_c, "t_r": measured["t_r"], "R_a": t_c / t_m,
                                 "R_r": measured["t_r"] / t_c, **bw}, m),
        **bus.columns(z),  # NaN (empty) on http
        "broker_suspicions": len(checker.broker_suspicions(events, grace=2 * (z.t_h or 0) * z.time_scale + 0.5)),
        "broker_recovery": _paper_seconds(checker.broker_recovery(events), z.time_scale),
        # raw: CPU s per workflow of the design's services / the monolith's (not a Q_r: with `work: sleep` the
        # monolith burns almost nothing and it runs to tens); Q_r_compute is the figure to compare
        "cpu_ratio_to_monolith": cpu_wf / ref["cpu_per_workflow"] if ref["cpu_per_workflow"] else math.nan,
        _Q_R.model_column: m.Q_r, _Q_R.measured: len(deployment.services) - 1,
        # in monolith-equivalents of compute (docs/model.md): (design's compute / the monolith's) - 1
        _Q_R_COMPUTE.measured: metrics.compute_per_workflow(cpu, deployment.roles, events, z, verdict.completed)
        / metrics.monolith_compute(ref, z) - 1,
        **host_columns(counters.host_cpu), "clock_uncertainty": clock_uncertainty(record.clock_offsets),
        "wire_source": source, "wire_vs_service_op": agree.get("op", math.nan),
        "wire_vs_service_state": agree.get("state", math.nan),
        "header_bytes_per_message": overhead if overhead is not None else math.nan,
        "harness_cpu_share": counters.harness_cpu_share,
    }
    target = record.target
    if target is not None and not target.instrumented:  # from outside only: the client's history and the wire
        row = blackbox.fill(row, record, target)
        return Tables(row, links, blackbox.affected_rows(events, z.time_scale, row["t_c_measured"]), cpu_rows,
                      verdict)
    return Tables(row, links, metrics.affected_rows(events, z, t_c), cpu_rows, verdict)


def measured_beside_model(measured: dict[str, float], m: model.Metrics) -> dict[str, float]:
    """summary.csv's measured and modelled cells of the timed and bandwidth metrics (registry.summary_columns):
    a measured figure where the run measures it, the paper's model beside it or alone."""
    return {column: measured[metric.name] if column == metric.measured else getattr(m, metric.name)
            for metric in registry.TIMED for column in metric.run_columns()}


def host_columns(host: dict[str, Any]) -> dict[str, Any]:
    """The host's CPU headroom over the measured load (counters.json), and whether it saturated: the
    saturation guard of every figure (metrics.saturated); NaN and an empty flag in older folders."""
    flag = metrics.saturated(host)
    return {"host_busy": host.get("busy", math.nan), "host_busy_p90": host.get("busy_p90", math.nan),
            "host_full": host.get("full", math.nan), "saturated": "" if flag is None else flag}


def clock_uncertainty(offsets: dict[str, list[dict[str, Any]]]) -> float:
    """The largest uncertainty (wall s) of any node's clock offset, at the start or the end: every event from
    another host is on the harness's clock within it, so an interval between events of two hosts (the
    detection delay: a kill here, the suspicion there) within twice it. t_c and t_r are not bounded by it:
    the BSS stamps submission and completion on one clock. NaN where no offsets were measured (one host)."""
    found = [float(o["uncertainty"]) for phase in offsets.values() for o in phase or [] if "uncertainty" in o]
    return max(found) if found else math.nan


def _paper_seconds(wall: float, time_scale: float) -> float:
    """Wall seconds in paper seconds; NaN stays the one NaN, so two derivations of a row compare equal."""
    return math.nan if math.isnan(wall) else wall / time_scale


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A CSV table written whole or not at all (a reader never sees half a summary)."""
    columns = columns or (list(rows[0]) if rows else [])
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def write(tables: Tables, out: Path) -> None:
    """summary.csv, links.csv, affected.csv and cpu.csv into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "summary.csv", [tables.summary], SUMMARY_COLUMNS)
    write_csv(out / "links.csv", tables.links)
    write_csv(out / "affected.csv", tables.affected, AFFECTED_COLUMNS)
    write_csv(out / "cpu.csv", tables.cpu)
