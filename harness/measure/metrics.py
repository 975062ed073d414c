"""The paper's metrics measured: pure functions from a recorded history (plus byte and CPU counters) to
t_c, t_r, R_a, R_r, B_op, B_rel, B_tot and Q_r in paper units (seconds unscaled, kB/s).

Definitions, as close to the paper as a measurement can be:
- t_c: mean submit-to-completion time of the requests the fault did not touch (no takeover, no failed call,
  no task run twice, not in flight when the fault struck).
- t_r: the worst (longest) completion time of the requests the fault touched; NaN when it touched none.
- B_op, B_rel: bytes per workflow on each plane divided by t_c, plus the heartbeats' bytes per second (Eqs
  4, 5, 8, 9). Bytes are the message bodies the services counted; `links` compares them with the proxies'.
  In the distributed chain each hop's state goes to both instances of the next module: one copy is the
  operational message (Eq 9), the other the reliability mechanism's (Eq 8).
- cpu_ratio_to_monolith: CPU per workflow / the monolith's, raw (not a Q_r: with `work: sleep` the monolith
  burns almost nothing and the ratio runs to tens); the paper's Q_r is the count of extra instances.
- Q_r_compute: the same in monolith-equivalents of compute, the tasks' own compute counted whether the
  emulation burnt it or slept it (`compute_per_workflow`, docs/model.md "Q_r in compute").
- saturated: the host had no CPU headroom while the load ran (`saturated`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from harness import checker
from harness.history import Event
from harness.model import compute
from harness.plan.config import Experiment
from harness.plan.deploy import BROKER, Deployment
from protocol.messages import KB


def affected(events: list[Event]) -> set[str]:
    """Requests the fault touched: taken over, a call that failed, a task run twice, completed twice, or in
    flight during the fault and driven (owned, at some module) by the instance the fault hit; a fault of the
    broker hits every request in flight during it (every message crosses it: a workflow that waited the outage
    out without a takeover was slowed by it, and belongs in t_r, not t_c)."""
    touched = {e["req"] for e in events if e["kind"] in ("takeover", "task_call_failed", "forward_failed")}
    touched |= {req for req, _ in checker.reexecuted(events)}
    touched |= set(checker.duplicated(events))
    sub = checker.submitted(events)
    done = checker.completions(events)
    drivers: dict[str, set[str]] = {}
    for e in events:
        if e["kind"] == "request_received":
            drivers.setdefault(e["req"], set()).add(e["owner"])
    for target, start, end in checker.fault_windows(events):
        for req, t0 in sub.items():
            finish = done[req][-1]["t"] if req in done else math.inf
            if t0 <= end and start <= finish and (target == BROKER or target in drivers.get(req, ())):
                touched.add(req)
    return touched


def times(events: list[Event], z: Experiment) -> dict[str, float]:
    """t_c and t_r in paper seconds, with how many requests each rests on."""
    lat = {r: v / z.time_scale for r, v in checker.latencies(events).items()}
    hit = affected(events)
    clean = [v for r, v in lat.items() if r not in hit]
    worst = [v for r, v in lat.items() if r in hit]
    return {
        "t_c": statistics.fmean(clean) if clean else math.nan,
        "t_c_p50": statistics.median(clean) if clean else math.nan,
        "t_r": max(worst) if worst else math.nan,
        "clean": len(clean),
        "affected": len(hit),
    }


def plane_bytes(events: list[Event], deployment: Deployment, reqs: set[str] | None = None,
                until: float = math.inf) -> dict[str, float]:
    """Body bytes the services sent, per plane: op (operational), state (shares and 'done'), hb.

    Only for the requests `reqs` (all when None), and heartbeats only before `until`: the model describes
    a system with every instance alive, so figures for it come from before the fault and from the
    workflows it did not touch.
    """
    out: dict[str, float] = defaultdict(float)
    legs = 2 if deployment.z.transport == "amqp" and deployment.z.design != "monolith" else 1  # on a bus: a body
    for e in events:  # crosses the network published and delivered (harness.model.bus); the BSS's hop 0 once
        kind = e["kind"]
        if kind == "hb_sent":
            if e["t"] < until and not e.get("triggered"):  # the injector's extra one is not the mechanism's rate
                out["hb"] += legs * e["bytes"] * e["peers"]
            continue
        if reqs is not None and e.get("req") not in reqs:
            continue
        if kind == "task_reply":
            out["op"] += legs * (e["bytes_out"] + e["bytes_in"])
        elif kind == "forward_sent":
            out["op"] += legs * e["bytes"]
        elif kind in ("state_share_sent", "done_sent"):
            out["state"] += legs * e["bytes"]
        elif kind == "submitted" and e["svc"] == "bss" and deployment.z.design == "distributed":
            out["op"] += deployment.entry_bytes * len(deployment.entry)  # hop 0: to both instances of m_1
    return dict(out)


def bandwidth(events: list[Event], deployment: Deployment, t_c: float) -> dict[str, float]:
    """B_op, B_rel, B_tot in kB/s as the paper defines them, from service-counted bytes of the workflows the
    fault did not touch that completed before it (when there are any), and the heartbeats sent before it;
    t_c is in paper seconds."""
    z = deployment.z
    until = min(checker.fault_times(events), default=math.inf)
    done = checker.completions(events)
    clean = set(done) - affected(events)
    before = {r for r in clean if done[r][-1]["t"] < until}
    clean = before or clean  # after a crash the survivors lack a peer to share with: not the modelled system
    planes = plane_bytes(events, deployment, clean, until)
    duration = heartbeat_window(events, until)
    hb_rate = planes.get("hb", 0.0) / KB / (duration / z.time_scale) if duration > 0 else 0.0
    op = planes.get("op", 0.0) / KB / max(1, len(clean))
    state = planes.get("state", 0.0) / KB / max(1, len(clean))
    if z.design == "distributed":
        b_op, b_rel = op / 2 / t_c, hb_rate + (op / 2 + state) / t_c
    elif z.design == "centralised":
        b_op, b_rel = op / t_c, hb_rate + state / t_c
    else:
        b_op, b_rel = 0.0, 0.0
    return {"B_op": b_op, "B_rel": b_rel, "B_tot": b_op + b_rel, "hb_kBps": hb_rate}


def heartbeat_window(events: list[Event], until: float = math.inf) -> float:
    """Wall seconds during which the counted heartbeats flowed: from the first, for as many intervals as
    each sender sent, so the window and the count cover the same heartbeats."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for e in events:
        if e["kind"] == "hb_sent" and e["t"] < until and not e.get("triggered"):
            first.setdefault(e["svc"], e["t"])
            last[e["svc"]] = e["t"]
    spans = [last[s] - first[s] for s in first]
    return sum(spans) / len(spans) if spans else 0.0


def cpu_per_workflow(cpu: dict[str, tuple[float, float]], roles: dict[str, str], completed: int) -> float:
    """CPU seconds of the MANO services (not the harness, proxies or load) per completed workflow."""
    total = sum(u + s for name, (u, s) in cpu.items() if name in roles)
    return total / completed if completed else math.nan


def emulated_work(events: list[Event], z: Experiment) -> dict[str, float]:
    """Wall CPU-seconds of emulated work per service, burnt (`work: burn`) or slept: t_i of every task a
    worker, module or monolith started, t_o of every orchestration step an SLM made (one before each task it
    called, retries of a call excluded, and one at the end of each workflow)."""
    t_i = z.per_task("t_i")
    out: dict[str, float] = defaultdict(float)
    for e in events:
        if e["kind"] == "task_start" and e.get("task"):
            out[e["svc"]] += t_i[e["task"] - 1] * z.time_scale
        elif z.design == "centralised" and ((e["kind"] == "task_call" and not e.get("attempt"))
                                            or (e["kind"] == "request_completed" and e.get("task") is None)):
            out[e["svc"]] += z.t_o * z.time_scale
    return dict(out)


def overhead_cpu(cpu: dict[str, tuple[float, float]], events: list[Event], z: Experiment) -> dict[str, float]:
    """Per service: its CPU seconds less the emulated work it burnt (`work: burn`; with `sleep` it burnt none),
    what the mechanism itself cost (HTTP, JSON, heartbeats, shares, logging, 'done', the event loop)."""
    burnt = emulated_work(events, z) if z.work == "burn" else {}
    return {name: u + s - burnt.get(name, 0.0) for name, (u, s) in cpu.items()}


def compute_per_workflow(cpu: dict[str, tuple[float, float]], roles: dict[str, str], events: list[Event],
                         z: Experiment, completed: int) -> float:
    """Compute per completed workflow, wall CPU-seconds: the emulated work of one workflow as configured
    (W, harness.model.compute.work_per_workflow) plus the MANO services' overhead CPU (`overhead_cpu`; the
    harness, proxies and load left out) per workflow."""
    overhead = sum(v for name, v in overhead_cpu(cpu, events, z).items() if name in roles)
    return compute.work_per_workflow(z) * z.time_scale + overhead / completed if completed else math.nan


def monolith_compute(reference: dict[str, float], z: Experiment) -> float:
    """The monolith's compute per workflow for the same tasks: W = t_m and its measured CPU beyond the work
    it burnt (t_m with `work: burn`)."""
    w_m = sum(z.per_task("t_i")) * z.time_scale
    return w_m + reference.get("cpu_per_workflow", math.nan) - (w_m if z.work == "burn" else 0.0)


SATURATED_FULL = 0.25  # share of the measured load with the host's cores >= cpu.FULL busy that saturates it


def saturated(host: dict[str, float]) -> bool | None:
    """Whether the host had no CPU headroom left while the load ran: for at least SATURATED_FULL of the
    measured load its cores were all at least 95% busy (harness.measure.cpu.host_summary). None: not recorded."""
    if not host:
        return None
    return bool(host.get("full", 0.0) >= SATURATED_FULL)


def link_rows(deployment: Deployment, counters: dict[str, dict[str, object]], events: list[Event],
              wire: dict[str, dict[str, int]] | None = None) -> list[dict]:
    """One row per link: bytes each way as captured on the wire (TCP payload towards/from the address the
    source dials) and as the proxy forwarded them, beside the body bytes the services say they sent."""
    # (caller, address it dials) -> link: without a proxy per link (netem) two callers dial the same address
    by_addr = {(link.src, link.address): link for link in deployment.links}
    said: dict[str, float] = defaultdict(float)
    messages: dict[str, int] = defaultdict(int)
    for e in events:
        kind, svc = e["kind"], e["svc"]
        names: list[tuple[str, float]] = []
        if kind == "task_reply" and (svc, e["worker"]) in by_addr:
            names = [(by_addr[svc, e["worker"]].name, e["bytes_out"])]
        elif kind == "submitted" and svc == "bss":
            names = [(by_addr[svc, a].name, deployment.entry_bytes) for a in deployment.entry if (svc, a) in by_addr]
        elif kind == "forward_sent" and (svc, e["to"]) in by_addr:
            names = [(by_addr[svc, e["to"]].name, e["bytes"])]
        elif kind in ("state_share_sent", "done_sent"):
            names = [(f"{svc}>{e['peer']}:state", e["bytes"])]
        elif kind == "hb_sent":
            names = [(link.name, e["bytes"]) for link in deployment.links
                     if link.src == svc and link.plane == "hb"]
        for name, size in names:
            said[name] += size
            messages[name] += 1
    rows = []
    for link in deployment.links:
        c = counters.get(link.name, {})
        w = (wire or {}).get(link.name, {})
        rows.append({"link": link.name, "src": link.src, "dst": link.dst, "plane": link.plane,
                     "delay_fwd": link.delay_fwd, "delay_rev": link.delay_rev,
                     "wire_bytes_fwd": w.get("to", ""), "wire_bytes_rev": w.get("from", ""),
                     "proxy_bytes_fwd": c.get("bytes_fwd", ""), "proxy_bytes_rev": c.get("bytes_rev", ""),
                     "service_bytes_fwd": said.get(link.name, 0.0), "messages": messages.get(link.name, 0)})
    return rows


def byte_source(rows: list[dict]) -> str:
    """Which wire-side count the cross-check uses: the packet capture when it ran, else the proxies'."""
    return "wire" if any(r["wire_bytes_fwd"] != "" for r in rows) else "proxy"


def header_overhead(rows: list[dict], source: str = "wire") -> float | None:
    """Bytes per message the wire carries beyond the bodies, estimated on the heartbeat plane (many small
    messages of one shape: HTTP request line and headers)."""
    column = f"{source}_bytes_fwd"
    hb = [r for r in rows if r["plane"] == "hb" and r["messages"] and r[column] != ""]
    if not hb:
        return None
    extra = sum(r[column] - r["service_bytes_fwd"] for r in hb)
    return extra / sum(r["messages"] for r in hb)


def wire_agreement(rows: list[dict], overhead: float | None, source: str = "wire") -> dict[str, float]:
    """Per plane: (wire bytes - messages x overhead) / service bytes - 1, the relative disagreement."""
    if overhead is None:
        return {}
    column = f"{source}_bytes_fwd"
    out = {}
    for plane in ("op", "hb", "state"):
        sel = [r for r in rows if r["plane"] == plane and r["messages"] and r[column] != ""]
        said = sum(r["service_bytes_fwd"] for r in sel)
        if said:
            wire = sum(r[column] - r["messages"] * overhead for r in sel)
            out[plane] = wire / said - 1
    return out


def affected_rows(events: list[Event], z: Experiment, t_c: float) -> list[dict]:
    """Per request the fault touched: its completion time, the time it lost against t_c (its recovery
    time), how often it completed, and where a survivor resumed it (paper seconds)."""
    lat = {r: v / z.time_scale for r, v in checker.latencies(events).items()}
    done = checker.completions(events)
    resumed: dict[str, list[str]] = defaultdict(list)
    for e in checker.takeovers(events):
        resumed[e["req"]].append(f"{e['svc']}@{e['from_task']}")
    return [{"req": req, "latency": lat.get(req, math.nan), "lost_time": lat.get(req, math.nan) - t_c,
             "completions": len(done.get(req, [])), "takeovers": " ".join(resumed.get(req, []))}
            for req in sorted(affected(events))]
