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

import csv
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import least_squares

from harness import checker, config, history, metrics, model
from harness.config import Experiment
from harness.errors import UserError
from harness.sweep import read_record, read_rows

METRIC_NAMES = ("t_m", "t_c", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot", "Q_r")
ERROR_METRICS = ("t_c", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot")
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


# --- the sweep's trials -------------------------------------------------------------------------------------


@dataclass
class TrialData:
    id: str
    point: str
    repeat: int
    dir: Path
    z: Experiment
    row: dict[str, str]
    overrides: dict[str, Any] = field(default_factory=dict)

    _events: list | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        if self._events is None:
            path = self.dir / "events.jsonl"
            self._events = history.measured(history.read(path)) if path.exists() else []
        return self._events


def num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_trials(out: Path) -> tuple[dict[str, Any], list[TrialData]]:
    """sweep.yaml and every finished trial (a row in trials.csv) with its resolved z."""
    record = read_record(out)
    overrides = {p["id"]: p.get("overrides", {}) for p in record.get("points", [])}
    trials = []
    for row in read_rows(out / "trials.csv"):
        tdir = out / "trials" / row["trial"]
        cfg = tdir / "config.yaml"
        if not cfg.exists():
            continue
        z = config.build((yaml.safe_load(cfg.read_text(encoding="utf-8")) or {})["z"])
        trials.append(TrialData(row["trial"], row["point"], int(row["repeat"]), tdir, z, row,
                                overrides.get(row["point"], {})))
    if not trials:
        raise UserError(f"{out}: no finished trials yet (trials.csv has no rows): run the sweep first")
    return record, trials


# --- observations -----------------------------------------------------------------------------------------


@dataclass
class Obs:
    family: str
    ts: float  # time_scale of the trial
    cfg: float  # configured value, paper seconds
    y: float  # measured, wall seconds
    task: int | None = None
    trial: str = ""


def _first(events: list[dict], kinds: tuple[str, ...], reqs: set[str]) -> dict[str, dict[tuple[str, int], float]]:
    out: dict[str, dict[tuple[str, int], float]] = {k: {} for k in kinds}
    for e in events:
        if e["kind"] in out and e.get("req") in reqs and e.get("task") is not None:
            out[e["kind"]].setdefault((e["req"], e["task"]), e["t"])
    return out


def observations(t: TrialData) -> list[Obs]:
    """Per-task timings of the requests the fault did not touch, the detection delays and heartbeat intervals."""
    ev, z = t.events, t.z
    if not ev:
        return []
    ts = z.time_scale
    clean = set(checker.completions(ev)) - metrics.affected(ev)
    obs: list[Obs] = []
    add = obs.append
    t_i = z.per_task("t_i")
    if z.design == "centralised":
        f = _first(ev, ("task_call", "task_reply", "task_start", "task_end"), clean)
        calls, replies, starts, ends = f["task_call"], f["task_reply"], f["task_start"], f["task_end"]
        l_a, l_b = z.per_task("l_a"), z.per_task("l_b")
        for (req, i), c in calls.items():
            if (req, i) in starts and (req, i) in ends and (req, i) in replies:
                add(Obs("l_a", ts, l_a[i - 1], starts[(req, i)] - c, i, t.id))
                add(Obs("l_b", ts, l_b[i - 1], replies[(req, i)] - ends[(req, i)], i, t.id))
                add(Obs("t_i", ts, t_i[i - 1], ends[(req, i)] - starts[(req, i)], i, t.id))
            if (req, i - 1) in replies:
                add(Obs("t_o", ts, z.t_o, c - replies[(req, i - 1)], i, t.id))
    elif z.design == "distributed":
        f = _first(ev, ("task_start", "task_end"), clean)
        starts, ends = f["task_start"], f["task_end"]
        sub = checker.submitted(ev)
        hops = z.per_task("l")
        for (req, i), s in starts.items():
            if (req, i) in ends:
                add(Obs("t_i", ts, t_i[i - 1], ends[(req, i)] - s, i, t.id))
            if i == 1 and req in sub:
                add(Obs("l", ts, hops[0], s - sub[req], 0, t.id))
            elif (req, i - 1) in ends:
                add(Obs("l", ts, hops[i - 1], s - ends[(req, i - 1)], i - 1, t.id))
    else:
        f = _first(ev, ("task_start", "task_end"), clean)
        for (req, i), s in f["task_start"].items():
            if (req, i) in f["task_end"]:
                add(Obs("t_i", ts, t_i[i - 1], f["task_end"][(req, i)] - s, i, t.id))
    assert z.t_h is not None
    for d, arrived, _kill in detections(ev):
        # the heartbeat's latency plus the monitor's lag: declared dead t_h after the last heartbeat that
        # arrived, which was sent at `arrived`; the model's l_hb + t_h is this for a crash right after it
        add(Obs("l_hb", ts, z.l_hb, d.declared_at - arrived - z.t_h * ts, None, t.id))
    until = min(checker.fault_times(ev), default=math.inf)
    sent: dict[str, list[float]] = defaultdict(list)
    for e in ev:
        if e["kind"] == "hb_sent" and e["t"] < until:
            sent[e["svc"]].append(e["t"])
    for times in sent.values():
        if len(times) >= 3:
            add(Obs("hb_interval", ts, 1.0 / z.h_r, (times[-1] - times[0]) / (len(times) - 1), None, t.id))
    return obs


def detections(ev: list[dict[str, Any]]) -> list[tuple[checker.Detection, float, float]]:
    """Each kill that was detected, with the send time of the victim's last heartbeat that arrived (the
    survivor's `last_seen` is when it arrived) and the kill time."""
    out = []
    dead = {(e["svc"], e["peer"]): e for e in ev if e["kind"] == "peer_dead"}
    for d in checker.detections(ev):
        if d.declared_at is None or (d.by, d.target) not in dead:
            continue
        seen = dead[(d.by, d.target)].get("last_seen")
        sent = [e["t"] for e in ev if e["kind"] == "hb_sent" and e["svc"] == d.target and seen is not None
                and e["t"] <= seen]
        if sent:
            out.append((d, max(sent), d.killed_at))
    return out


# --- least squares ----------------------------------------------------------------------------------------------


@dataclass
class Param:
    name: str
    value: float
    stderr: float
    configured: float | None
    unit: str
    observations: int
    note: str = ""

    def row(self) -> dict[str, Any]:
        return {"parameter": self.name, "value": self.value, "stderr": self.stderr,
                "configured": "" if self.configured is None else self.configured, "unit": self.unit,
                "observations": self.observations, "note": self.note}


def _solve(X: np.ndarray, y: np.ndarray, lower: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Robust linear least squares: (x, stderr). soft_l1 with the residual scale of an OLS start, so a
    few messages delayed by a busy CPU do not drag the estimates."""
    x0, *_ = np.linalg.lstsq(X, y, rcond=None)
    if lower > -np.inf:
        x0 = np.maximum(x0, lower + 1e-12)
    r0 = y - X @ x0
    scale = max(1.4826 * float(np.median(np.abs(r0 - np.median(r0)))), 1e-6)
    res = least_squares(lambda x: X @ x - y, x0, loss="soft_l1", f_scale=scale,
                        bounds=(np.full(len(x0), lower), np.full(len(x0), np.inf)) if lower > -np.inf
                        else (-np.inf, np.inf))
    m, p = X.shape
    dof = max(1, m - p)
    try:
        cov = np.linalg.inv(res.jac.T @ res.jac) * (2 * res.cost / dof)
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        err = np.full(p, np.nan)
    return res.x, err


@dataclass
class Family:
    """Fitted y = p_k ts + o (offset families) or y = a cfg ts + o (scale families), o in wall seconds."""

    name: str
    kind: str  # offset | scale
    p: dict[float, tuple[float, float, int]] = field(default_factory=dict)  # cfg -> (value, stderr, n)
    a: tuple[float, float] = (1.0, math.nan)
    o: tuple[float, float] = (0.0, math.nan)
    identified: bool = False  # o told apart from p (two or more time scales)
    n: int = 0

    def effective(self, cfg: float, ts: float) -> float:
        """The parameter a run at time scale ts experiences, paper seconds."""
        if self.kind == "scale":
            return self.a[0] * cfg + self.o[0] / ts
        key = _key(cfg)
        if key in self.p:
            return self.p[key][0] + self.o[0] / ts
        return cfg + self.o[0] / ts if self.identified else cfg


def _key(v: float) -> float:
    return round(float(v), 9)


def fit_family(name: str, kind: str, obs: list[Obs]) -> Family | None:
    if not obs:
        return None
    fam = Family(name, kind, n=len(obs))
    y = np.array([o.y for o in obs])
    ts = np.array([o.ts for o in obs])
    if kind == "scale":
        x = np.array([o.cfg * o.ts for o in obs])
        X = np.column_stack([x, np.ones_like(x)])
        if np.linalg.matrix_rank(X) == 2:
            (a, o), (ea, eo) = _solve(X, y)
            fam.a, fam.o, fam.identified = (a, ea), (o, eo), True
        else:
            (a,), (ea,) = _solve(x[:, None], y)
            fam.a = (a, ea)
        return fam
    cfgs = sorted({_key(o.cfg) for o in obs})
    cols = [np.where(np.array([_key(o.cfg) for o in obs]) == c, ts, 0.0) for c in cfgs]
    X = np.column_stack([*cols, np.ones_like(y)])
    identified = np.linalg.matrix_rank(X) == X.shape[1]
    if not identified:
        X = X[:, :-1]
    x, err = _solve(X, y)
    counts = Counter(_key(o.cfg) for o in obs)
    fam.p = {c: (float(x[j]), float(err[j]), counts[c]) for j, c in enumerate(cfgs)}
    if identified:
        fam.o, fam.identified = (float(x[-1]), float(err[-1])), True
    return fam


# --- bytes and CPU -------------------------------------------------------------------------------------------


def header_params(trials: list[TrialData]) -> list[Param]:
    """Bytes per message on the wire beyond the body, per plane and overall: (wire - body) = h * messages."""
    per_plane: dict[str, list[tuple[float, float]]] = defaultdict(list)
    source = "wire"
    for t in trials:
        path = t.dir / "links.csv"
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        src = "wire" if any(r.get("wire_bytes_fwd") not in ("", None) for r in rows) else "proxy"
        source = src if src == "proxy" else source
        hit = {e.get("target") for e in t.events if e["kind"] == "fault"}
        for r in rows:
            if r["src"] in hit or r["dst"] in hit:  # messages lost or cut short by the fault
                continue
            msgs, wire, said = num(r.get("messages")), num(r.get(f"{src}_bytes_fwd")), num(r.get("service_bytes_fwd"))
            if msgs > 0 and math.isfinite(wire) and math.isfinite(said) and wire > 0:
                per_plane[r["plane"]].append((msgs, wire - said))
    out = []
    everything = [pair for pairs in per_plane.values() for pair in pairs]
    for plane, pairs in [("all", everything), *sorted(per_plane.items())]:
        if not pairs:
            continue
        X = np.array([[m] for m, _ in pairs])
        y = np.array([extra for _, extra in pairs])
        (h,), (eh,) = _solve(X, y)
        name = "header_bytes" if plane == "all" else f"header_bytes.{plane}"
        out.append(Param(name, float(h), float(eh), None, "bytes/message", len(pairs),
                         f"HTTP request line + headers, from {source} bytes vs service-counted bodies"))
    return out


MESSAGE_KINDS = ("task_call", "task_reply", "task_start", "task_end", "request_received", "forward_sent",
                 "state_share_sent", "state_share_received", "done_sent", "done_received")


def cpu_params(trials: list[TrialData]) -> list[Param]:
    """CPU seconds of each MANO service = c_msg messages + c_hb heartbeats + c_idle wall seconds + c_start
    (interpreter start-up and imports). A kB term is left out: with fixed message sizes it is collinear with
    the message count."""
    X, y = [], []
    for t in trials:
        path = t.dir / "cpu.csv"
        if not path.exists() or not t.events:
            continue
        with path.open(encoding="utf-8") as fh:
            cpu = {r["service"]: num(r["total_s"]) for r in csv.DictReader(fh) if r["role"] != "harness"}
        msgs: Counter[str] = Counter()
        hbs: Counter[str] = Counter()
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        start = history.load_start(t.events)  # cpu.csv counts from there (harness.cpu's baseline)
        for e in t.events:
            svc = e["svc"]
            if svc not in cpu or e["t"] < start:
                continue
            first.setdefault(svc, max(start, e["t"]))
            last[svc] = e["t"]
            if e["kind"] in MESSAGE_KINDS:
                msgs[svc] += 1
            elif e["kind"] == "hb_sent":
                hbs[svc] += 2 * e.get("peers", 1)  # sent, and about as many received
        for svc, total in cpu.items():
            if svc in first and math.isfinite(total):
                X.append([msgs[svc], hbs[svc], last[svc] - first[svc], 1.0])
                y.append(total)
    if len(y) < 5:
        return []
    x, err = _solve(np.array(X, dtype=float), np.array(y), lower=0.0)
    names = [("cpu.per_message", 1e3, "ms CPU/message"),
             ("cpu.per_heartbeat", 1e3, "ms CPU/heartbeat (sent or received)"),
             ("cpu.idle", 100.0, "% of a core while up"), ("cpu.fixed", 1.0, "s CPU per service and trial")]
    return [Param(name, float(x[j]) * k, float(err[j]) * k, None, unit, len(y),
                  "over every MANO service of every trial (cpu.csv vs counts in the history)")
            for j, (name, k, unit) in enumerate(names)]


# --- the fit of a whole sweep --------------------------------------------------------------------------------


@dataclass
class Fit:
    families: dict[str, Family]
    params: list[Param]
    per_task: list[Param]
    notes: list[str]

    def zfit(self, z: Experiment) -> Experiment:
        """z with every fitted parameter at its effective value for z's time scale (not re-validated)."""
        ts = z.time_scale
        upd: dict[str, Any] = {}
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
    by_family: dict[str, list[Obs]] = defaultdict(list)
    for t in trials:
        for o in observations(t):
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
    per_task = _per_task(by_family, families)
    return Fit(families, params, per_task, notes)


def fault_params(trials: list[TrialData]) -> list[Param]:
    """How far the crashes were from the model's worst case (a crash right after a heartbeat went out)."""
    after, early = [], []
    for t in trials:
        ts = t.z.time_scale
        for _d, arrived, kill in detections(t.events):
            after.append((kill - arrived) / ts)
        early += [e.get("early_by", 0.0) / ts for e in t.events if e["kind"] == "fault" and e.get("action") == "kill"]
    out = []
    if after:
        mean, err = _mean_err(after)
        out.append(Param("fault.crash_after_heartbeat", mean, err, 0.0, "s", len(after),
                         "crash time - send of the victim's last heartbeat that arrived; the model's t_r assumes 0, "
                         "so measured t_r falls short of it by this much"))
    if early:
        mean, err = _mean_err(early)
        out.append(Param("fault.early_by", mean, err, 0.0, "s", len(early),
                         "how early the injector struck before the modelled worst moment (faults/aim.py)"))
    return out


def _mean_err(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan)


def _per_task(by_family: dict[str, list[Obs]], families: dict[str, Family]) -> list[Param]:
    """l_a + l_b per task i (centralised) and l per hop (distributed), each family's overhead removed."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    configured: dict[tuple[str, int], set[float]] = defaultdict(set)
    for name in ("l_a", "l_b", "l"):
        fam = families.get(name)
        for o in by_family.get(name, []) if fam else []:
            if o.task is not None:
                values[(name, o.task)].append((o.y - fam.o[0]) / o.ts)
                configured[(name, o.task)].add(_key(o.cfg))
    out = []
    tasks = sorted({task for name, task in values if name == "l_a"})
    for task in tasks:
        (a, ea), (b, eb) = _mean_err(values[("l_a", task)]), _mean_err(values.get(("l_b", task), []))
        ca, cb = configured[("l_a", task)], configured.get(("l_b", task), set())
        cfg = next(iter(ca)) + next(iter(cb)) if len(ca) == 1 and len(cb) == 1 else None
        note = "per-message cost removed" if families["l_a"].identified else "effective (one time scale)"
        out.append(Param(f"l_a+l_b (task {task})", a + b, math.hypot(ea, eb), cfg, "s",
                         len(values[("l_a", task)]), note))
    for task in sorted({task for name, task in values if name == "l"}):
        value, err = _mean_err(values[("l", task)])
        cfgs = configured[("l", task)]
        note = "per-message cost removed" if families["l"].identified else "effective (one time scale)"
        name = f"l (hop {task}: m{task} -> m{task + 1})" if task else "l (hop 0: BSS -> m1)"
        out.append(Param(name, value, err, next(iter(cfgs)) if len(cfgs) == 1 else None, "s",
                         len(values[("l", task)]), note))
    return out


# --- points: measured beside modelled ------------------------------------------------------------------------


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def point_rows(record: dict[str, Any], trials: list[TrialData], fit: Fit | None) -> list[dict[str, Any]]:
    """Per point: the swept keys, measured mean/min/max/std over its repeats, the model with the configured
    parameters and with the fitted ones."""
    swept = list(record.get("swept") or [])
    by_point: dict[str, list[TrialData]] = defaultdict(list)
    for t in trials:
        by_point[t.point].append(t)
    order = [p["id"] for p in record.get("points", [])]
    ids = sorted(by_point, key=lambda p: order.index(p) if p in order else len(order))
    rows = []
    for pid in ids:
        group = sorted(by_point[pid], key=lambda t: t.repeat)
        z = group[0].z
        row: dict[str, Any] = {"point": pid, "design": z.design, "mechanism": z.mechanism, "n": z.n,
                               "h_r": z.h_r, "t_h": z.t_h, "t_h_mult": round(z.t_h * z.h_r, 6) if z.t_h else None,
                               "s_p": z.s_p, "s_o": z.s_o, "time_scale": z.time_scale, "fault": z.fault}
        for key in swept:
            if key not in row:
                value = group[0].overrides.get(key, getattr(z, key, None))
                row[key] = value if not isinstance(value, list) else str(value)
        row["repeats"] = len(group)
        row["instances_extra"] = statistics.fmean(_finite([num(t.row.get("instances_extra")) for t in group]) or
                                                  [math.nan])
        configured = model.evaluate(z)
        fitted = model.evaluate(fit.zfit(z)) if fit else None
        for m in METRIC_NAMES:
            values = _finite([num(t.row.get(f"{m}_measured")) for t in group])
            row[f"{m}_mean"] = statistics.fmean(values) if values else math.nan
            row[f"{m}_min"] = min(values) if values else math.nan
            row[f"{m}_max"] = max(values) if values else math.nan
            row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else math.nan)
            row[f"{m}_model"] = getattr(configured, m)
            row[f"{m}_fitted"] = getattr(fitted, m) if fitted else math.nan
        rows.append(row)
    return rows


def _rel(model_value: float, measured: float) -> float:
    if not (math.isfinite(model_value) and math.isfinite(measured)) or measured == 0:
        return math.nan
    return abs(model_value - measured) / abs(measured)


def error_rows(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: mean and max relative error |model - measured| / measured over the points (means over
    repeats), with the configured parameters (before) and the fitted ones (after)."""
    rows = []
    for m in ERROR_METRICS:
        before = _finite([_rel(p[f"{m}_model"], p[f"{m}_mean"]) for p in points])
        after = _finite([_rel(p[f"{m}_fitted"], p[f"{m}_mean"]) for p in points])
        rows.append({"metric": m, "points": len(before),
                     "before_mean": statistics.fmean(before) if before else math.nan,
                     "before_max": max(before) if before else math.nan,
                     "after_mean": statistics.fmean(after) if after else math.nan,
                     "after_max": max(after) if after else math.nan})
    return rows


# --- the cost function on measured points --------------------------------------------------------------------


def primary_scale(points: list[dict[str, Any]]) -> float:
    """The sweep's own time scale: the most common one (other ones are calibration points)."""
    return Counter(p["time_scale"] for p in points).most_common(1)[0][0]


def measured_cost(p: dict[str, Any], weights: tuple[float, float, float, float], qr: str = "cpu") -> float:
    q = p["instances_extra"] if qr == "instances" else p["Q_r_mean"]
    if qr == "cpu" and not math.isfinite(q):
        q = p["instances_extra"]
    return model.cost(weights, p["R_a_mean"], p["R_r_mean"], p["B_tot_mean"], q)


def _cost(weights: tuple[float, float, float, float], p: dict[str, Any], kind: str) -> float:
    return model.cost(weights, p[f"R_a_{kind}"], p[f"R_r_{kind}"], p[f"B_tot_{kind}"], p[f"Q_r_{kind}"])


def cost_rows(points: list[dict[str, Any]], weights: tuple[float, float, float, float], swept: list[str],
              qr: str = "cpu") -> list[dict[str, Any]]:
    """Every point of the sweep's own time scale, costed measured and modelled, cheapest measured first."""
    ts = primary_scale(points)
    keys = [k for k in swept if k not in ("design", "mechanism", "time_scale")]
    rows = []
    for p in points:
        if p["time_scale"] != ts:
            continue
        q = p["instances_extra"] if qr == "instances" else p["Q_r_mean"]
        rows.append({"design": p["design"], "mechanism": p["mechanism"], **{k: p.get(k) for k in keys},
                     "repeats": p["repeats"], "R_a": p["R_a_mean"], "R_r": p["R_r_mean"], "B_tot": p["B_tot_mean"],
                     "Q_r": q, "C_measured": measured_cost(p, weights, qr),
                     "C_model_fitted": _cost(weights, p, "fitted"), "C_model": _cost(weights, p, "model"),
                     "point": p["point"]})
    for col, rank in (("C_model_fitted", "rank_model"), ("C_measured", "rank")):
        ordered = sorted(rows, key=lambda r, c=col: (not math.isfinite(r[c]), r[c]))
        for i, r in enumerate(ordered):
            r[rank] = i + 1
    rows.sort(key=lambda r: r["rank"])
    return [{"rank": r.pop("rank"), **r} for r in rows]


def optimise_measured(out: Path, weights: tuple[float, float, float, float], qr: str = "cpu") -> list[dict[str, Any]]:
    """C(z) of Eq 10 on the measured points of a sweep (means over repeats) beside the fitted model's,
    ranked by the measured cost (rank_model: the fitted model's own ranking)."""
    record, trials = load_trials(Path(out))
    fit = fit_trials(trials)
    points = point_rows(record, trials, fit)
    return cost_rows(points, weights, list(record.get("swept") or []), qr)


def _describe(row: dict[str, Any]) -> str:
    skip = {"rank", "design", "mechanism", "repeats", "R_a", "R_r", "B_tot", "Q_r", "C_measured", "C_model_fitted",
            "C_model", "point", "rank_model"}
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k not in skip]
    return ", ".join(parts) or "the base configuration"


def optimum_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The optimum per design and overall, measured beside what the fitted model picks."""
    lines = []
    for design in dict.fromkeys((r["design"], r["mechanism"]) for r in rows):
        mine = [r for r in rows if (r["design"], r["mechanism"]) == design]
        by_model = min(mine, key=lambda r: r["rank_model"])
        measured = [r for r in mine if math.isfinite(r["C_measured"])]
        if not measured:
            lines.append(f"optimum {design[0]} ({design[1]}): no measured C (a weighted metric was not measured, "
                         f"e.g. R_r without a fault); the fitted model picks {_describe(by_model)}, "
                         f"C = {by_model['C_model_fitted']:.4g}")
            continue
        best = min(measured, key=lambda r: r["rank"])
        agree = "the model agrees" if by_model is best else f"the fitted model picks {_describe(by_model)}"
        lines.append(f"optimum {design[0]} ({design[1]}): {_describe(best)}, C measured = {best['C_measured']:.4g} "
                     f"(model {best['C_model_fitted']:.4g}); {agree}")
    measured = [r for r in rows if math.isfinite(r["C_measured"])]
    if measured:
        best = min(measured, key=lambda r: r["rank"])
        lines.append(f"optimum overall: {best['design']} ({best['mechanism']}), {_describe(best)}, "
                     f"C measured = {best['C_measured']:.4g}")
    return lines


# --- harness fit DIR -------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    fit: Fit
    param_rows: list[dict[str, Any]]
    error_rows: list[dict[str, Any]]
    points: list[dict[str, Any]]
    notes: list[str]
    trials: int


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def analyse(out: Path) -> tuple[dict[str, Any], list[TrialData], FitResult]:
    record, trials = load_trials(Path(out))
    fit = fit_trials(trials)
    trials_ok = [t for t in trials if t.events]
    fit.params += header_params(trials_ok) + cpu_params(trials_ok)
    points = point_rows(record, trials, fit)
    params = [p.row() for p in fit.params + fit.per_task]
    result = FitResult(fit, params, error_rows(points), points, fit.notes, len(trials))
    return record, trials, result


def fit_dir(out: Path) -> FitResult:
    """`harness fit DIR`: fit.csv, model_error.csv and points.csv in DIR."""
    out = Path(out)
    _, _, result = analyse(out)
    write_rows(out / "fit.csv", result.param_rows)
    write_rows(out / "model_error.csv", result.error_rows)
    write_rows(out / "points.csv", result.points)
    return result
