"""The figures as pure functions over hand-made histories, as Jepsen tests its checkers: which requests a
fault touched, t_c and t_r, B_op / B_rel from service-counted bytes, links.csv and the wire's agreement,
the worst task to crash at, and the whole summary row from a run record held in memory."""

from __future__ import annotations

import math

import pytest

from faults.aim import worst_task
from faults.base import FaultContext
from harness import checker, model
from harness.history import Collector
from harness.history.record import Counters, Record
from harness.measure import metrics, summary
from harness.plan import config
from harness.plan.deploy import plan

KB = 1000


def ev(t: float, svc: str, kind: str, **fields) -> dict:
    return {"t": t, "wall": t, "svc": svc, "kind": kind, **fields}


Z = config.build({"design": "centralised", "n": 2, "t_i": 1.0, "h_r": 2, "time_scale": 1.0, "P_a": 10, "P_b": 10,
                  "s_z": 20, "p_c": 0.1, "h_s": 0.1, "fault": "slm-crash"})
HOSTS: dict[str, str] = {}
DEPLOYMENT = plan(Z, "run1", lambda s: HOSTS.setdefault(s, f"127.9.9.{len(HOSTS) + 1}"), "127.9.9.250:8100", None)
M = {i: next(link.address for link in DEPLOYMENT.links if link.src == "slm-a" and link.dst == f"m{i}")
     for i in (1, 2)}


def workflow(req: str, t0: float, slm: str = "slm-a") -> list[dict]:
    """One clean centralised workflow of two tasks, driven by `slm`: 2.5 s from submission to completion."""
    peer = "slm-b" if slm == "slm-a" else "slm-a"
    return [
        ev(t0, "bss", "submitted", req=req, to=2), ev(t0 + 0.1, slm, "request_received", req=req, owner=slm, bytes=50),
        ev(t0 + 0.2, slm, "task_call", req=req, task=1, name="a", worker=M[1], attempt=1),
        ev(t0 + 0.3, "m1", "task_start", req=req, task=1, name="a"),
        ev(t0 + 1.2, slm, "task_reply", req=req, task=1, name="a", worker=M[1], bytes_out=10 * KB, bytes_in=10 * KB),
        ev(t0 + 1.3, slm, "state_share_sent", req=req, task=1, peer=peer, bytes=20 * KB),
        ev(t0 + 1.4, slm, "task_call", req=req, task=2, name="b", worker=M[2], attempt=1),
        ev(t0 + 1.5, "m2", "task_start", req=req, task=2, name="b"),
        ev(t0 + 2.4, slm, "task_reply", req=req, task=2, name="b", worker=M[2], bytes_out=10 * KB, bytes_in=10 * KB),
        ev(t0 + 2.45, slm, "done_sent", req=req, peer=peer, bytes=100),
        ev(t0 + 2.5, "bss", "completed", req=req, by=slm, n=1),
    ]


def heartbeats(until: float) -> list[dict]:
    return [ev(k / 2, svc, "hb_sent", seq=k, peers=1, bytes=100)
            for k in range(int(until * 2)) for svc in ("slm-a", "slm-b")]


def history_with_a_crash() -> list[dict]:
    """r1 clean; r2 driven by slm-a, which is killed at t = 4 after task 1; slm-b takes over and finishes
    r2 at t = 7 (4 s after it was submitted)."""
    r2 = [
        ev(3.0, "bss", "submitted", req="r2", to=2),
        ev(3.1, "slm-a", "request_received", req="r2", owner="slm-a", bytes=50),
        ev(3.2, "slm-a", "task_call", req="r2", task=1, name="a", worker=M[1], attempt=1),
        ev(3.3, "m1", "task_start", req="r2", task=1, name="a"),
        ev(4.0, "harness", "fault", fault="slm-crash", action="kill", target="slm-a", req="r2", task=1),
        ev(4.8, "slm-b", "peer_dead", peer="slm-a", silent_for=1.5),
        ev(4.9, "slm-b", "takeover", req="r2", dead="slm-a", from_task=1),
        ev(5.0, "m1", "task_start", req="r2", task=1, name="a"), ev(7.0, "bss", "completed", req="r2", by="slm-b", n=1),
    ]
    marks = [ev(-1, "harness", "ready"), ev(-0.5, "harness", "load_start")]
    return sorted([*heartbeats(4.0), *marks, *workflow("r1", 0.0), *r2], key=lambda e: e["t"])


def test_a_broker_fault_touches_every_request_in_flight_during_it():
    """No takeover, no failed call: r2 waited a broker pause out (the fenced chain's way) and r1 had finished."""
    events = [e for e in history_with_a_crash() if e["kind"] not in ("takeover", "fault", "peer_dead")
              and not (e["kind"] == "task_start" and e["t"] == 5.0)]
    pause = [ev(4.0, "harness", "fault", fault="broker-pause", action="pause", target="broker"),
             ev(4.6, "harness", "fault", fault="broker-pause", action="resume", target="broker")]
    assert metrics.affected(sorted([*events, *pause], key=lambda e: e["t"])) == {"r2"}
    assert metrics.affected(events) == set()


def test_a_fault_touches_the_requests_its_victim_drove_and_only_those():
    events = history_with_a_crash()
    assert metrics.affected(events) == {"r2"}
    times = metrics.times(events, Z)
    assert (times["t_c"], times["t_r"], times["clean"], times["affected"]) == (2.5, 4.0, 1, 1)
    (row,) = metrics.affected_rows(events, Z, times["t_c"])
    assert row == {"req": "r2", "latency": 4.0, "lost_time": 1.5, "completions": 1, "takeovers": "slm-b@1"}


def test_bandwidth_counts_the_clean_workflows_bytes_and_the_heartbeats_before_the_fault():
    events = history_with_a_crash()
    bw = metrics.bandwidth(events, DEPLOYMENT, 2.5)
    assert bw["B_op"] == pytest.approx(40 / 2.5)  # P_a + P_b of two tasks, kB, per t_c
    hb = 16 * 100 / KB / 3.5  # 8 heartbeats of each SLM before t = 4, over the 3.5 s between first and last
    assert bw["hb_kBps"] == pytest.approx(hb)
    assert bw["B_rel"] == pytest.approx(hb + 20.1 / 2.5)  # one share of s_z and one 'done' of p_c
    assert bw["B_tot"] == pytest.approx(bw["B_op"] + bw["B_rel"])


def test_links_csv_attributes_service_bytes_and_the_wire_agrees_to_the_header_overhead():
    events = history_with_a_crash()
    beats = {svc: sum(1 for e in events if e["kind"] == "hb_sent" and e["svc"] == svc) for svc in ("slm-a", "slm-b")}
    a_m1 = "slm-a>m1:op"
    wire = {link.name: {"to": beats[link.src] * (100 + 200), "from": 0} for link in DEPLOYMENT.links
            if link.plane == "hb"}  # every heartbeat: its body and a 200-byte header
    wire[a_m1] = {"to": int(10 * KB * 1.01) + 200, "from": 0}  # a header, and 1% more than the body
    rows = {r["link"]: r for r in metrics.link_rows(DEPLOYMENT, {}, events, wire)}
    assert rows[a_m1]["service_bytes_fwd"] == 10 * KB and rows[a_m1]["messages"] == 1  # r2's task 1 never replied
    table = list(rows.values())
    assert metrics.byte_source(table) == "wire"
    overhead = metrics.header_overhead(table, "wire")
    assert overhead == pytest.approx(200)
    agree = metrics.wire_agreement(table, overhead, "wire")
    assert agree["hb"] == pytest.approx(0, abs=1e-12)
    assert agree["op"] == pytest.approx(0.01)


@pytest.mark.parametrize("values,task", [
    ({"design": "centralised", "n": 6, "s_o": 1, "s_p": 3}, 4),  # shares after 1 and 4: runs [1], [2-4], [5-6]
    ({"design": "centralised", "n": 6, "s_o": 2, "s_p": 2}, 2),  # runs [1-2], [3-4], [5-6]: the first
    ({"design": "centralised", "mechanism": "restart", "n": 5}, 5),  # no shares: everything is lost at the end
    ({"design": "distributed", "n": 4, "t_i": [1, 3, 2, 3]}, 2),  # the longest task (the first of equals)
])
def test_the_worst_task_is_the_end_of_the_longest_unprotected_run(values, task):
    z = config.build(values)
    ctx = FaultContext(z, plan(z, "r", lambda s: "127.0.0.1", "127.0.0.1:1", None), Collector(), processes=None,  # type: ignore[arg-type]
                       model=model)
    assert worst_task(ctx) == task


def _nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def record(events: list[dict], **counters) -> Record:
    cpu = {"slm-a": (0.3, 0.1), "slm-b": (0.05, 0.05), "m1": (0.1, 0.0), "proxyd": (9.0, 9.0)}
    return Record(Z, "run1", "proxy", events, DEPLOYMENT, Counters(cpu=cpu, **counters),
                  {"t_m": 2.0, "cpu_per_workflow": 0.1}, None)


def test_the_summary_row_is_a_function_of_the_record():
    tables = summary.derive(record(history_with_a_crash(), harness_cpu_share=0.25))
    row = tables.summary
    assert list(row) == summary.SUMMARY_COLUMNS
    assert (row["requests"], row["completed"], row["lost"], row["duplicated"], row["takeovers"]) == (2, 2, 0, 0, 1)
    assert (row["verdict"], row["history_holes"], row["false_suspicions"]) == ("pass", 0, 0)
    assert (row["t_c_measured"], row["t_r_measured"], row["R_a_measured"], row["R_r_measured"]) == (2.5, 4.0, 1.25, 1.6)
    assert row["detection_delay"] == pytest.approx(0.8)
    assert row["cpu_ratio_to_monolith"] == pytest.approx((0.6 / 2) / 0.1)  # services only: proxyd is not the design's
    assert row["instances_extra"] == len(DEPLOYMENT.services) - 1 and row["harness_cpu_share"] == 0.25
    assert math.isnan(row["header_bytes_per_message"]) and row["wire_source"] == "proxy"
    assert [r["req"] for r in tables.affected] == ["r2"] and {r["service"] for r in tables.cpu} >= {"slm-a", "proxyd"}
    again = summary.derive(record(history_with_a_crash(), harness_cpu_share=0.25)).summary  # no hidden state
    assert [k for k in row if not (row[k] == again[k] or (_nan(row[k]) and _nan(again[k])))] == []


def test_the_clock_offsets_uncertainty_is_a_column_and_the_table_says_what_it_bounds():
    """Several hosts' clocks (a swarm run): the largest offset uncertainty of any node at the start or the end
    is summary.csv's clock_uncertainty, and the run's table gives it with the detection delay it bounds (twice
    it, in paper seconds); with one host's clock there is neither."""
    from harness.cli.progress import summary_table

    one_host = summary.derive(record(history_with_a_crash())).summary
    assert _nan(one_host["clock_uncertainty"]) and "clock offsets" not in summary_table(one_host)
    rec = record(history_with_a_crash())
    rec.clock_offsets = {"start": [{"node": "a", "offset": 0.001, "uncertainty": 0.0002},
                                   {"node": "b", "offset": -0.003, "uncertainty": 0.0005}],
                         "end": [{"node": "a", "offset": 0.001, "uncertainty": 0.0003}]}
    row = summary.derive(rec).summary
    assert row["clock_uncertainty"] == 0.0005
    lines = {line.strip("│┃ ").split()[0]: line for line in summary_table(row).splitlines() if "ms" in line
             or "detection delay" in line}
    assert "+-0.50 ms" in lines["clock"]
    assert f"+-{2 * 0.0005 / row['time_scale']:.4f}" in lines["bounds"] and "detection delay" in lines["bounds"]


def test_holes_in_the_history_make_the_verdict_unknown_and_a_lost_workflow_fail():
    """A lost workflow fails the run only where nothing could hide its notice (docs/checker.md, "Evidence
    rules"): with holes in the history the loss may be one of them, and the verdict is unknown."""
    events = history_with_a_crash()
    assert summary.derive(record(events, collector_bad_lines=2)).summary["verdict"] == "unknown"
    lost = [e for e in events if not (e["kind"] == "completed" and e["req"] == "r2")]
    row = summary.derive(record(lost, collector_bad_lines=2)).summary
    assert (row["verdict"], row["lost"], row["history_holes"]) == ("unknown", 1, 2)
    row = summary.derive(record(lost)).summary
    assert (row["verdict"], row["lost"], row["history_holes"]) == ("fail", 1, 0)


def test_at_worst_the_victim_ends_when_it_falls_silent_and_its_last_heartbeat_is_not_the_rate():
    """`--fault-at worst`: the driver sends one triggered heartbeat, falls silent (`silent_at`), and is killed
    once the survivor acknowledged it: detection counts from the silence, and the extra heartbeat is no part
    of the mechanism's heartbeat rate."""
    events = history_with_a_crash()
    kill = next(e for e in events if e["kind"] == "fault")
    kill["silent_at"] = 3.9
    events.append(ev(3.9, "slm-a", "hb_sent", seq=99, peers=1, bytes=100, triggered=True, silence=True))
    events.sort(key=lambda e: e["t"])
    (d,) = checker.detections(events)
    assert (d.killed_at, d.delay) == (3.9, pytest.approx(0.9))
    assert metrics.bandwidth(events, DEPLOYMENT, 2.5)["hb_kBps"] == pytest.approx(16 * 100 / KB / 3.5)
