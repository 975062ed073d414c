"""The model's free parameters fitted to what a sweep measured, and the model's error before and after.

What is fitted (least squares, scipy.optimize.least_squares with a robust loss), each from the per-task
timings in the histories rather than from t_c (over an n sweep t_c alone cannot tell t_o from l: both grow
with n):

- t_o: the gap from `task_reply` of task i to `task_call` of task i+1 at the SLM.
- l_a, l_b: `task_call` -> the worker's `task_start`, and its `task_end` -> `task_reply`; l (distributed): a
  module's `task_end` -> the next module's `task_start` (hop 0: the BSS's `submitted` -> m_1's `task_start`).
- t_i: the workers' `task_start` -> `task_end` (achieved against configured).
- l_hb: the survivors' detection delay (kill -> `peer_dead`) minus t_h.
- the heartbeat interval achieved against 1 / h_r.
- header bytes per message: wire (or proxy) bytes minus the bodies the services counted, per message.
- CPU: per message, per kB of body, per heartbeat and per second of idling, over every service of every trial.

Every timing y (wall seconds) of a trial at time_scale ts is modelled as y = p ts + o: p is the paper
parameter (it scales with ts, like the configured latency the proxy adds) and o a per-message software cost
in wall seconds (JSON, HTTP, the event loop, the scheduler; it does not scale). One p per configured value,
one o per family. p and o can only be told apart when the sweep has trials at two or more time scales (a
calibration point in `extra:`); with one time scale o is fixed at 0 and p is the *effective* value,
software cost included, which is still what the model needs to predict that sweep.

The model after fitting is the model with every parameter replaced by its effective value at the point's
time scale, p + o / ts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from harness import history, model
from harness.analysis import qr, tables
from harness.analysis.fitdata import (  # noqa: F401 - the trials, observations and least squares, re-exported
    Family,
    Obs,
    Param,
    TrialData,
    _key,
    _solve,
    detections,
    fit_family,
    load_trials,
    num,
    observations,
)
from harness.analysis.optimum import (  # noqa: F401 - the cost and optimum, re-exported for fit's callers
    COST_COLUMNS,
    ModelGrid,
    cost_table,
    flag,
    optimum_lines,
    primary_scale,
    trial_costs,
)
from harness.analysis.sweep_folder import SweepRecord
from harness.history.guarded import read_json
from harness.measure import metrics
from harness.model import compute, registry
from harness.plan.config import Experiment

METRIC_NAMES = tuple(m.name for m in registry.REGISTRY if m.paper and m.measured)  # points.csv's, both models'
MEASURED = tuple(m.name for m in registry.REGISTRY if m.measured)  # points.csv's statistics over the repeats
ERROR_METRICS = registry.ERRORS  # the run's compared metrics, and Q_r in compute
OFFSET_FAMILIES = {  # family -> (what it is, the config key of its configured value)
    "t_o": ("orchestrator time between tasks (task_reply -> next task_call)", "t_o"),
    "l_a": ("latency SLM -> m_i (task_call -> task_start)", "l_a"),
    "l_b": ("latency m_i -> SLM (task_end -> task_reply)", "l_b"),
    "l": ("distributed hop latency (task_end -> next module's task_start)", "l"),
    "l_hb": ("heartbeat latency + detection lag (peer_dead - t_h - send of the last heartbeat that arrived)",
             "l_hb"),
}
SCALE_FAMILIES = {
    "t_i": "task time achieved / configured (task_start -> task_end)",
    "hb_interval": "heartbeat interval achieved / configured 1 / h_r",
}


# --- bytes and CPU -------------------------------------------------------------------------------------------


def header_params(trials: list[TrialData]) -> list[Param]:
    """Bytes per message on the wire beyond the body, per plane and overall: (wire - body) = h * messages."""
    frames, source = [], "wire"
    for t in trials:
        links = tables.read_csv(t.dir / "links.csv")
        if links.empty:
            continue
        src = "wire" if tables.numeric(links, ["wire_bytes_fwd"]).iloc[:, 0].notna().any() else "proxy"
        source = src if src == "proxy" else source
        hit = {e.get("target") for e in t.events if e["kind"] == "fault"}  # messages lost or cut short by it
        counts = tables.numeric(links, ["messages", f"{src}_bytes_fwd", "service_bytes_fwd"])
        counts.columns = ["messages", "wire", "said"]
        keep = ~(links["src"].isin(hit) | links["dst"].isin(hit)) & (counts.messages > 0) & (counts.wire > 0) \
            & counts.said.notna()
        frames.append(pd.DataFrame({"plane": links["plane"], "messages": counts.messages,
                                    "extra": counts.wire - counts.said})[keep])
    if not frames:
        return []
    everything = pd.concat(frames, ignore_index=True)
    out = []
    for plane, rows in [("all", everything), *sorted(everything.groupby("plane"))]:
        (h,), (eh,) = _solve(rows[["messages"]].to_numpy(float), rows["extra"].to_numpy(float))
        name = "header_bytes" if plane == "all" else f"header_bytes.{plane}"
        out.append(Param(name, float(h), float(eh), None, "bytes/message", len(rows),
                         f"HTTP request line + headers, from {source} bytes vs service-counted bodies"))
    return out


def bus_params(trials: list[TrialData]) -> list[Param]:
    """The bus's per-message overhead (harness.model.bus), from the trials on the bus (transport amqp).

    t_bus: what a message takes beyond its configured latency, from the legs the histories time (l_a, l_b;
    the chain's hops after hop 0, which is HTTP): y - l ts = t_bus ts + o, o told apart with two or more time
    scales (else t_bus is effective, the services' per-message cost included, which is what the bus-aware
    model adds to Eq 2). amqp_frame: the framing per message and leg, on the heartbeat plane (messages of one
    shape): the wire's bytes both ways less the bodies published and delivered, over 4 frames a heartbeat
    (its publish and delivery, its reply's publish and delivery; the reply's few body bytes and the acks of
    durable queues count as framing)."""
    bus = [t for t in trials if t.z.transport == "amqp" and t.events]
    legs = [o for t in bus for o in observations(t) if o.family in ("l_a", "l_b") or (o.family == "l" and o.task)]
    out: list[Param] = []
    configured = {t.z.t_bus for t in bus}
    if legs:
        ts = np.array([o.ts for o in legs])
        excess = np.array([o.y - o.cfg * o.ts for o in legs])
        X = np.column_stack([ts, np.ones_like(ts)])
        what = "bus: a message's time beyond its configured latency, per broker pass"
        cfg = configured.pop() if len(configured) == 1 else None
        if np.linalg.matrix_rank(X) == 2:
            (p, o), (ep, eo) = _solve(X, excess)
            out += [Param("t_bus", float(p), float(ep), cfg, "s", len(legs), what),
                    Param("t_bus.overhead", float(o) * 1e3, float(eo) * 1e3, None, "ms (wall)", len(legs),
                          "bus: per-message software cost, does not scale with time_scale")]
        else:
            (p,), (ep,) = _solve(ts[:, None], excess)
            out.append(Param("t_bus", float(p), float(ep), cfg, "s", len(legs),
                             f"{what}; effective: includes the per-message cost (one time scale)"))
    frames = []
    for t in bus:
        links = tables.read_csv(t.dir / "links.csv")
        if links.empty:
            continue
        src = "wire" if tables.numeric(links, ["wire_bytes_fwd"]).iloc[:, 0].notna().any() else "proxy"
        hit = {e.get("target") for e in t.events if e["kind"] == "fault"}
        counts = tables.numeric(links, ["messages", f"{src}_bytes_fwd", f"{src}_bytes_rev", "service_bytes_fwd"])
        counts.columns = ["messages", "fwd", "rev", "said"]
        keep = (links["plane"] == "hb") & ~links["src"].isin(hit) & (counts.messages > 0) & counts.said.notna()
        frames.append(pd.DataFrame({"frames": 4 * counts.messages,
                                    "extra": counts.fwd + counts.rev - 2 * counts.said})[keep])
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not rows.empty:
        (f,), (ef,) = _solve(rows[["frames"]].to_numpy(float), rows["extra"].to_numpy(float))
        out.append(Param("amqp_frame", float(f) / 1000, float(ef) / 1000, None, "kB/message/leg", len(rows),
                         "bus: AMQP framing per message and leg (heartbeat plane: bytes both ways less the bodies)"))
    return out


MESSAGE_KINDS = compute.MESSAGE_KINDS
CPU_TERMS = ("messages", "heartbeats", "up", "fixed")


def _run_window(t: TrialData) -> tuple[float, float]:
    """(start, end) of the trial's CPU count, monotonic seconds: from the measured load's start for as long as
    the sampler ran (counters.json's host_cpu seconds), else up to the testbed's `down`."""
    start = history.load_start(t.events)
    counters = t.dir / "counters.json"
    seconds = (read_json(counters).get("host_cpu") or {}).get("seconds") if counters.exists() else None
    if seconds:
        return start, start + float(seconds)
    ends = [e["t"] for e in t.events if e["kind"] == "down"] or [max(e["t"] for e in t.events)]
    return start, max(ends)


def cpu_activity(t: TrialData) -> pd.DataFrame:
    """Per MANO service of a trial: its overhead CPU seconds (cpu.csv, counted from load start on, less the
    emulated work it burnt with `work: burn`) beside what it did over the same span: message events,
    heartbeats (sent, and about as many received), wall seconds up (to its kill, if killed), and 1 for the
    per-service fixed cost."""
    cpu = tables.read_csv(t.dir / "cpu.csv")
    if cpu.empty or not t.events:
        return pd.DataFrame()
    total = cpu[cpu["role"] != "harness"].set_index("service")["total_s"]
    start, end = _run_window(t)
    ev = pd.DataFrame(t.events)
    ev = ev[(ev["t"] >= start) & ev["svc"].isin(total.index)]
    peers = ev["peers"].fillna(1) if "peers" in ev else 1
    scheduled = ~ev["triggered"].fillna(False).astype(bool) if "triggered" in ev else True
    ev = ev.assign(message=ev["kind"].isin(MESSAGE_KINDS),
                   heartbeat=np.where((ev["kind"] == "hb_sent") & scheduled, 2 * peers, 0))
    per = ev.groupby("svc").agg(messages=("message", "sum"), heartbeats=("heartbeat", "sum"))
    killed: dict[str, float] = {e["target"]: e["silent_at"] if "silent_at" in e else e["t"] for e in t.events
                                if e["kind"] == "fault" and e.get("action") == "kill" and e.get("target")}
    cpu_s = {str(name): (float(v), 0.0) for name, v in total.items()}
    overhead = pd.Series(metrics.overhead_cpu(cpu_s, t.events, t.z), dtype=float)
    per = per.assign(up=[min(end, killed.get(svc, end)) - start for svc in per.index], fixed=1.0,
                     cpu=overhead.reindex(per.index), trial=t.id)
    return per[np.isfinite(per["cpu"])][[*CPU_TERMS, "cpu", "trial"]]


def cpu_fit(trials: list[TrialData]) -> tuple[list[Param], compute.CpuCosts | None]:
    """Overhead CPU seconds of each MANO service = c_msg messages + c_hb heartbeats + c_up seconds up + c_start
    (a kB term is left out: with fixed message sizes it is collinear with the message count): the CPU costs
    with which harness.model.compute predicts Q_r_compute from z."""
    frames = [cpu_activity(t) for t in trials]
    activity = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame()])
    if len(activity) < 5:
        return [], None
    X = activity[list(CPU_TERMS)].to_numpy(float)
    x, err = _solve(X, activity["cpu"].to_numpy(float), lower=0.0)
    names = [("cpu.per_message", 1e3, "ms CPU/message event (wall)"),
             ("cpu.per_heartbeat", 1e3, "ms CPU/heartbeat sent or received (wall)"),
             ("cpu.idle", 100.0, "% of a core while up"), ("cpu.fixed", 1.0, "s CPU per service and trial")]
    params = [Param(name, float(x[j]) * k, float(err[j]) * k, None, unit, len(activity),
                    "over every MANO service of every trial: cpu.csv (less burnt emulated work) vs the history")
              for j, (name, k, unit) in enumerate(names)]
    return params, compute.CpuCosts(*(float(v) for v in x))


# --- the fit of a whole sweep --------------------------------------------------------------------------------


@dataclass
class Fit:
    families: dict[str, Family]
    params: list[Param]
    per_task: list[Param]
    notes: list[str]
    cpu_costs: compute.CpuCosts | None = None  # the CPU fit (`cpu.*`), None: too few cpu.csv rows

    def q_r_compute(self, z: Experiment) -> float:
        """The fitted model's Q_r_compute of z (harness.model.compute), NaN without a CPU fit."""
        if self.cpu_costs is None:
            return math.nan
        fitted = model.evaluate(self.zfit(z))
        return compute.q_r_compute(self.zfit(z), self.cpu_costs, fitted.t_c, fitted.t_r)

    def zfit(self, z: Experiment) -> Experiment:
        """z with every fitted parameter at its effective value for z's time scale (not re-validated)."""
        ts = z.time_scale
        upd: dict[str, float | list[float]] = {}
        fam = self.families
        for key in ("l_a", "l_b", "l"):
            if key in fam:
                upd[key] = [fam[key].effective(v, ts) for v in z.per_task(key)]
        if "t_o" in fam:
            upd["t_o"] = fam["t_o"].effective(z.t_o, ts)
        if "l_hb" in fam:
            upd["l_hb"] = max(0.0, fam["l_hb"].effective(z.l_hb, ts))
        if "t_i" in fam:
            upd["t_i"] = [fam["t_i"].effective(v, ts) for v in z.per_task("t_i")]
        if "hb_interval" in fam:
            upd["h_r"] = 1.0 / fam["hb_interval"].effective(1.0 / z.h_r, ts)
        return z.model_copy(update=upd)


def fit_trials(trials: list[TrialData]) -> Fit:
    obs = [o for t in trials for o in observations(t)]
    by_family: dict[str, list[Obs]] = defaultdict(list)
    for o in obs:
        by_family[o.family].append(o)
    families: dict[str, Family] = {}
    params: list[Param] = []
    notes: list[str] = []
    scales = sorted({t.z.time_scale for t in trials})
    for name, (what, _key_name) in OFFSET_FAMILIES.items():
        fam = fit_family(name, "offset", by_family.get(name, []))
        if fam is None:
            continue
        families[name] = fam
        several = len(fam.p) > 1
        for cfg, (value, err, count) in fam.p.items():
            label = f"{name}[{cfg:g}]" if several else name
            note = what if fam.identified else f"{what}; effective: includes the per-message cost (one time scale)"
            params.append(Param(label, value, err, cfg, "s", count, note))
        if fam.identified:
            params.append(Param(f"{name}.overhead", fam.o[0] * 1e3, fam.o[1] * 1e3, None, "ms (wall)", fam.n,
                                "per-message software cost, does not scale with time_scale"))
    for name, what in SCALE_FAMILIES.items():
        fam = fit_family(name, "scale", by_family.get(name, []))
        if fam is None:
            continue
        families[name] = fam
        params.append(Param(f"{name}.scale", fam.a[0], fam.a[1], 1.0, "x configured", fam.n, what))
        if fam.identified:
            params.append(Param(f"{name}.overhead", fam.o[0] * 1e3, fam.o[1] * 1e3, None, "ms (wall)", fam.n,
                                "wall time beyond the scaled configured value"))
    if len(scales) < 2:
        notes.append(f"every trial ran at time_scale {scales[0]:g}: the fitted latencies and t_o are effective "
                     "values that include the services' per-message cost; add a trial at another time_scale "
                     "(spec `extra:`) to separate the two")
    params += fault_params(trials)
    per_task = _per_task(pd.DataFrame([asdict(o) for o in obs], columns=[f.name for f in fields(Obs)]), families)
    return Fit(families, params, per_task, notes)


def _mean_err(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (NaN below 2 values)."""
    s = pd.Series(values, dtype=float)
    return float(s.mean()), float(s.sem())  # type: ignore[arg-type]


def fault_params(trials: list[TrialData]) -> list[Param]:
    """How far the crashes were from the model's worst case (a crash right after a heartbeat went out), and how
    late the injector's crash came after the configured schedule's worst moment: the event's `late_by`
    (faults/aim.py: positive when late); folders written before it carry `early_by`, its negation."""
    after, late = [], []
    for t in trials:
        ts = t.z.time_scale
        after += [(kill - arrived) / ts for _d, arrived, kill in detections(t.events)]
        late += [(e["late_by"] if "late_by" in e else -e.get("early_by", 0.0)) / ts for e in t.events
                 if e["kind"] == "fault" and e.get("action") == "kill"]
    out = []
    if after:
        out.append(Param("fault.crash_after_heartbeat", *_mean_err(after), 0.0, "s", len(after),
                         "the victim's end (its silence at `worst`, else the kill) - send of its last heartbeat "
                         "that arrived; the model's t_r assumes 0, so measured t_r falls short of it by this much"))
    if late:
        out.append(Param("fault.late_by", *_mean_err(late), 0.0, "s", len(late),
                         "how late the crash came after the configured schedule's worst moment (paper s; positive: "
                         "after it, as the real task ends a little after its configured end; faults/aim.py)"))
    return out


def _per_task(obs: pd.DataFrame, families: dict[str, Family]) -> list[Param]:
    """l_a + l_b per task i (centralised) and l per hop (distributed), each family's overhead removed."""
    lat = obs[obs["family"].isin([f for f in ("l_a", "l_b", "l") if f in families]) & obs["task"].notna()]
    if lat.empty:
        return []
    overhead = lat["family"].map({f: families[f].o[0] for f in families})
    lat = lat.assign(value=(lat["y"] - overhead) / lat["ts"], cfg=lat["cfg"].map(_key), task=lat["task"].astype(int))
    g = lat.groupby(["family", "task"])
    by_task = g["value"].agg(["mean", "sem", "count"]).join(g["cfg"].agg(lambda c: c.iloc[0] if c.nunique() == 1
                                                                          else math.nan))
    stats: dict[tuple[str, int], dict[str, float]] = by_task.to_dict("index")  # type: ignore[assignment]  # (family, task) ->
    none = {"mean": math.nan, "sem": math.nan, "count": 0, "cfg": math.nan}
    out = []
    for (family, task), a in stats.items():
        note = "per-message cost removed" if families[family].identified else "effective (one time scale)"
        if family == "l_a":
            b = stats.get(("l_b", task), none)
            name, value, err, cfg = f"l_a+l_b (task {task})", a["mean"] + b["mean"], \
                math.hypot(a["sem"], b["sem"]), a["cfg"] + b["cfg"]
        elif family == "l":
            name = f"l (hop {task}: m{task} -> m{task + 1})" if task else "l (hop 0: BSS -> m1)"
            value, err, cfg = a["mean"], a["sem"], a["cfg"]
        else:
            continue
        out.append(Param(name, value, err, None if math.isnan(cfg) else cfg, "s", int(a["count"]), note))
    return sorted(out, key=lambda p: not p.name.startswith("l_a+l_b"))  # per task first, then per hop


# --- points: measured beside modelled ------------------------------------------------------------------------


def trial_table(trials: list[TrialData], fit: Fit) -> pd.DataFrame:
    """trials.csv's rows of the loaded trials, in the sweep's point order, with the fitted model's Q_r_compute
    (the `cpu` rule's model side, from the trial's z) and the saturation flag as a bool."""
    predicted: dict[str, float] = {}
    for t in trials:
        if t.point not in predicted:
            predicted[t.point] = fit.q_r_compute(t.z)
    return pd.DataFrame([{**t.row, "Q_r_compute_fitted": predicted[t.point], "saturated": flag(t.row.get("saturated"))}
                         for t in trials])


def _describe_point(t: TrialData, swept: list[str]) -> dict[str, object]:
    z = t.z
    row: dict[str, object] = {"point": t.point, "design": z.design, "mechanism": z.mechanism, "n": z.n, "h_r": z.h_r,
                           "t_h": z.t_h, "t_h_mult": round(z.t_h * z.h_r, 6) if z.t_h else None, "s_p": z.s_p,
                           "s_o": z.s_o, "time_scale": z.time_scale, "fault": z.fault,
                           "fault_at": z.fault_at}
    for key in swept:
        if key not in row:
            value = t.overrides.get(key, getattr(z, key, None))
            row[key] = value if not isinstance(value, list) else str(value)
    return row


def _models(z: Experiment, fit: Fit) -> dict[str, float]:
    """The model of z with the configured parameters (`<metric>_model`) and with the fitted ones (`_fitted`)."""
    configured, fitted = model.evaluate(z), model.evaluate(fit.zfit(z))
    return {**{f"{m}_{kind}": getattr(metrics_, m) for m in METRIC_NAMES
               for kind, metrics_ in (("model", configured), ("fitted", fitted))},
            "Q_r_compute_model": math.nan,  # the configured model has no CPU costs
            "Q_r_compute_fitted": fit.q_r_compute(z)}


def point_table(record: SweepRecord, trials: list[TrialData], fit: Fit) -> pd.DataFrame:
    """Per point (the sweep's order): the swept keys, the measured statistics over its repeats (tables.STATS),
    the model with the configured parameters (`_model`) and with the fitted ones (`_fitted`, Q_r_compute's
    too: the `cpu` rule's model side), the host's mean busy fraction, the mean fraction of the load it was
    full (`host_full`: every core >= 95% busy, the statistic the saturation flag is taken from) and how many
    repeats saturated it. Q_r is the extra instances on every side (measured, `_model`, `_fitted`)."""
    order = [p["id"] for p in record.get("points", [])]
    trials = sorted(trials, key=lambda t: (order.index(t.point) if t.point in order else len(order), t.repeat))
    # each metric under its own name: Q_r as the paper counts it, the extra instances, so Q_r_mean sits beside
    # Q_r_model and Q_r_fitted like for like; summary.csv's raw CPU ratio (whatever its column is named) stays out
    # of points.csv
    per_trial = trial_table(trials, fit)
    for m in MEASURED:
        column = registry.BY_NAME[m].measured
        if column != m:
            per_trial[m] = tables.numeric(per_trial, [column])[column]
    first = {t.point: t for t in reversed(trials)}  # the lowest repeat of each point stands for its z
    described = pd.DataFrame([_describe_point(first[p], list(record.get("swept") or []))
                              for p in dict.fromkeys(t.point for t in trials)]).set_index("point")
    models = pd.DataFrame([_models(first[p].z, fit) for p in described.index], index=described.index)
    by_point = per_trial.assign(saturated=per_trial["saturated"].astype(float)).groupby("point", sort=False)
    extra = tables.numeric(per_trial, ["instances_extra", "host_busy", "host_full"]).groupby(per_trial["point"],
                                                                                              sort=False)
    table = described.assign(repeats=by_point.size(), instances_extra=extra["instances_extra"].mean(),
                             host_busy=extra["host_busy"].mean(), host_full=extra["host_full"].mean(),
                             saturated=by_point["saturated"].sum().astype(int)) \
        .join(tables.over_repeats(per_trial, "point", list(MEASURED))).join(models)
    columns = [*described.columns, "repeats", "instances_extra", "host_busy", "host_full", "saturated",
               *(f"{m}_{s}" for m in MEASURED for s in (*tables.STATS, "model", "fitted"))]
    return table.reset_index()[["point", *columns]]


def error_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean and max relative error |model - measured| / measured over the points (means over
    repeats), with the configured parameters (before) and the fitted ones (after)."""
    rows = []
    for m in ERROR_METRICS:
        measured = tables.numeric(points, [f"{m}_mean"]).iloc[:, 0].replace(0, math.nan)
        err = {side: ((tables.numeric(points, [f"{m}_{kind}"]).iloc[:, 0] - measured).abs() / measured.abs())
               for side, kind in (("before", "model"), ("after", "fitted"))}
        rows.append({"metric": m, "points": int(measured.count()),  # measured there (the configured model may
                     # have no value: Q_r_compute has no CPU costs)
                     **{f"{side}_{stat}": getattr(e, stat)() for side, e in err.items() for stat in ("mean", "max")}})
    return pd.DataFrame(rows)


# --- the cost function on measured points --------------------------------------------------------------------


def optimise_measured(out: Path, weights: tuple[float, float, float, float], rule: str = "cpu",
                      include_saturated: bool = False) -> tuple[pd.DataFrame, str]:
    """C(z) of Eq 10 on the measured points of a sweep (means over repeats) beside the fitted model's, ranked
    by the measured cost, and the line that says which Q_r both took. The fitted model's grid over the
    measured ranges rides along in the table's attrs, so `optimum_lines(table)` says where the model's own
    minimum lies."""
    qr.q_r(rule, instances=0, cpu=0)  # an unknown rule is refused before the fit
    record, _, result = analyse(Path(out))
    table = cost_table(result.points, weights, list(record.get("swept") or []), rule, include_saturated,
                       trials=result.trials)
    table.attrs.update(model_grid=ModelGrid(result.points, record, result.fit), weights=weights, rule=rule)
    return table, qr.note(rule, result.fit.cpu_costs is not None)


# --- harness fit DIR -------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    fit: Fit
    params: pd.DataFrame  # fit.csv
    errors: pd.DataFrame  # model_error.csv
    points: pd.DataFrame  # points.csv
    trials: pd.DataFrame  # trials.csv's rows of the loaded trials, with Q_r_cpu_fitted
    notes: list[str]


def analyse(out: Path) -> tuple[SweepRecord, list[TrialData], FitResult]:
    record, trials = load_trials(Path(out))
    fit = fit_trials(trials)
    trials_ok = [t for t in trials if t.events]
    cpu, fit.cpu_costs = cpu_fit(trials_ok)
    fit.params += header_params(trials_ok) + bus_params(trials_ok) + cpu
    points = point_table(record, trials, fit)
    params = pd.DataFrame([p.row() for p in fit.params + fit.per_task])
    result = FitResult(fit, params, error_table(points), points, trial_table(trials, fit), fit.notes)
    return record, trials, result


def write_tables(out: Path, result: FitResult) -> None:
    """fit.csv, model_error.csv and points.csv in the sweep folder."""
    for name, frame in (("fit", result.params), ("model_error", result.errors), ("points", result.points)):
        tables.write_csv(Path(out) / f"{name}.csv", frame)


def fit_dir(out: Path) -> FitResult:
    """`harness fit DIR`: fit.csv, model_error.csv and points.csv in DIR."""
    _, _, result = analyse(Path(out))
    write_tables(out, result)
    return result
