"""What a sweep's trials say, as the fit reads them: every finished trial with its z and figures (`load_trials`),
the per-task timings of the requests the fault did not touch (`observations`), and the robust least squares
that turns them into a parameter (`fit_family`): y = p ts + o, p the paper parameter, o a per-message software
cost in wall seconds (harness.analysis.fit says why). Split from fit.py so each stays under 600 lines; fit.py
re-exports every name.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import SupportsFloat

import numpy as np
from scipy.optimize import least_squares

from harness import checker, history
from harness.analysis import tables
from harness.analysis.sweep_folder import TRIAL_ID, Settings, SweepRecord, read_record
from harness.errors import UserError
from harness.history import Event
from harness.history import record as run_record
from harness.history.guarded import guard, read_yaml
from harness.history.reading import read_history
from harness.measure import metrics, summary
from harness.plan import config
from harness.plan.config import Experiment

# --- the sweep's trials -------------------------------------------------------------------------------------


@dataclass
class TrialData:
    id: str
    point: str
    repeat: int
    dir: Path
    z: Experiment
    row: dict[str, object]  # its trials.csv row, numbers parsed
    overrides: Settings = field(default_factory=dict)

    _events: list[Event] | None = None

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            path = self.dir / "events.jsonl"
            # only what is an event: lines that are not count as the trial's holes (harness.history.reading)
            self._events = history.measured(read_history(path).events) if path.exists() else []
        return self._events


def num(value: object) -> float:
    if not isinstance(value, SupportsFloat | str):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan




def load_trials(out: Path) -> tuple[SweepRecord, list[TrialData]]:
    """sweep.yaml and every finished trial (a row in trials.csv) with its resolved z and its figures."""
    record = read_record(out)
    overrides = {p["id"]: p.get("overrides") or {} for p in record.get("points") or []}
    trials = []
    index = out / "trials.csv"
    frame = tables.read_csv(index)
    rows: list[tables.Row] = frame.to_dict("records") if "trial" in frame else []  # type: ignore[assignment]
    for row in rows:
        with guard(index, "a row"):
            trial, point, repeat = str(row["trial"]), str(row["point"]), int(row["repeat"])
            if not TRIAL_ID.fullmatch(trial):
                raise ValueError(f"{trial!r} is not a trial id")
        tdir = out / "trials" / trial
        cfg = tdir / "config.yaml"
        if not cfg.exists():
            continue
        with guard(cfg):
            z = config.build(read_yaml(cfg)["z"])
        if all((tdir / name).is_file() for name in run_record.REQUIRED):
            # trials.csv is the index and the progress record; the figures are recomputed from the trial's own
            # folder, so a fix to a metric reaches every trial of an old sweep (older folders keep their row)
            row = {**row, **summary.derive(run_record.load(tdir)).summary}
        trials.append(TrialData(trial, point, repeat, tdir, z, row, overrides.get(point, {})))
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


def _first(events: list[Event], kinds: tuple[str, ...], reqs: set[str]) -> dict[str, dict[tuple[str, int], float]]:
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
    for d, arrived, _kill in detections(ev):  # (detections() keeps only kills that were declared)
        assert d.declared_at is not None
        # the heartbeat's latency plus the monitor's lag: declared dead t_h after the last heartbeat that
        # arrived, which was sent at `arrived`; the model's l_hb + t_h is this for a crash right after it
        add(Obs("l_hb", ts, z.l_hb, d.declared_at - arrived - z.t_h * ts, None, t.id))
    until = min(checker.fault_times(ev), default=math.inf)
    sent: dict[str, list[float]] = defaultdict(list)
    for e in ev:
        if e["kind"] == "hb_sent" and e["t"] < until and not e.get("triggered"):  # on schedule only
            sent[e["svc"]].append(e["t"])
    for times in sent.values():
        if len(times) >= 3:
            add(Obs("hb_interval", ts, 1.0 / z.h_r, (times[-1] - times[0]) / (len(times) - 1), None, t.id))
    return obs


def detections(ev: list[Event]) -> list[tuple[checker.Detection, float, float]]:
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

    def row(self) -> dict[str, str | float]:
        return {"parameter": self.name, "value": self.value, "stderr": self.stderr,
                "configured": "" if self.configured is None else self.configured, "unit": self.unit,
                "observations": self.observations, "note": self.note}


def _solve(X: np.ndarray, y: np.ndarray, lower: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Robust linear least squares: (x, stderr). soft_l1 with the residual scale of an OLS start, so a
    few messages delayed by a busy CPU do not drag the estimates. Rows with a value that is not finite (a
    trial whose history was cut short has no end to count its time up to) carry nothing and are left out."""
    keep = np.isfinite(X).all(axis=1) & np.isfinite(y)
    X, y = X[keep], y[keep]
    if not len(y):
        raise UserError("fit: no usable observations (every one had a value that is not finite)")
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
