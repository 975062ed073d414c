"""Eq 10's cost on the measured points of a sweep, and the optimum as a reader must be able to check it.

An optimum line says three things apart, because they are different claims: what was *measured* best (with
its 95% interval where the repeats give one), which measured point the *fitted model* ranks best (whether
the measurement can tell the two apart), and where the fitted model's own minimum lies *between and beyond*
the measured points (`ModelGrid`): a model curve can dip at an n that was never run, or keep falling past
the largest n that was. Saying "the model agrees" about the measured points alone hid both (issue 24).

Only the swept *design* parameters name a point (`design_keys`): run keys such as `requests` or
`time_scale` are how a trial ran, not a choice the operator makes, and a key that does not vary among the
costed points names nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from harness import model
from harness.analysis import qr, tables
from harness.analysis.sweep_folder import Settings, SweepRecord
from harness.errors import ConfigError
from harness.model import registry
from harness.plan import config
from harness.plan.config import Experiment

Weights = tuple[float, float, float, float]
Value = float | int | str
"""A design key's value at a point of the model grid: a number, or a text such as `fault_at`'s."""


class FittedModel(Protocol):
    """The fitted model as the grid uses it (harness.analysis.fit.Fit): z at its fitted parameters, and its
    Q_r in compute."""

    def zfit(self, z: Experiment) -> Experiment: ...

    def q_r_compute(self, z: Experiment) -> float: ...

# How a trial runs, not what is being designed: never part of an optimum's name.
RUN_KEYS = frozenset({
    "design", "mechanism", "time_scale", "runtime", "link_backend", "fault", "fault_at", "fault_for", "spike",
    "requests", "users", "rate", "warmup", "seed", "work", "worker_replicas", "container_cpus", "container_memory",
    "alpha", "beta", "gamma", "delta", "model_reading", "t_bus", "amqp_frame",
})

COST_COLUMNS = {"rank", "design", "mechanism", "repeats", "R_a", "R_r", "B_tot", "Q_r", "Q_r_fitted", "C_measured",
                "C_model_fitted", "C_model", "saturated", "counted", "point", "rank_model", "C_ci95_lo", "C_ci95_hi",
                "left_out"}


def flag(value: object) -> bool:
    """A summary flag as read back from a CSV (True, 'True', 'true'); empty, NaN or False is not set."""
    return str(value).strip().lower() in ("true", "1", "1.0")


def primary_scale(points: pd.DataFrame) -> float:
    """The sweep's own time scale: the most common one (other ones are calibration points)."""
    return float(Counter(points["time_scale"]).most_common(1)[0][0])


def design_keys(points: pd.DataFrame, swept: list[str]) -> list[str]:
    """The swept keys that name a point of `points`: design parameters (no run key) that take two or more
    values there, in the spec's order."""
    keys = [k for k in swept if k not in RUN_KEYS and k in points]
    return [k for k in keys if points[k].astype(str).nunique() > 1]


def line_z(base: Settings, overrides: Settings, sets: Sequence[tuple[str, object]]) -> Experiment | None:
    """z at the point `overrides` + `sets` of a model line, or None where it is not valid."""
    try:
        return config.build(config.apply_overrides(base, [*overrides.items(), *sets]))
    except ConfigError:
        return None


def model_cost(w: Weights, m: model.Metrics | None, rule: str, q_r_compute: float = math.nan) -> float:
    """C of a modelled z, its Q_r under `rule`: the instance count, or the model's Q_r_compute (NaN for the
    configured model, which has no CPU costs)."""
    return model.cost(w, m.R_a, m.R_r, m.B_tot, qr.q_r(rule, instances=m.Q_r, cpu=q_r_compute)) if m else math.nan


# --- the measured cost -----------------------------------------------------------------------------------------


def trial_costs(trials: pd.DataFrame, weights: Weights, rule: str = "cpu",
                include_saturated: bool = False) -> pd.DataFrame:
    """Per point: Eq 10's C of each of its trials (the trial's own R_a, R_r, B_tot and Q_r under `rule`), then
    the mean and 95% interval over the trials that count: a trial on a saturated host measured the host, not
    the design, so it is left out (unless `include_saturated`) while its point's other repeats still count.
    Columns: point, R_a, R_r, B_tot, Q_r (means over the counted trials), C_measured, C_ci95_lo, C_ci95_hi,
    counted_repeats."""
    *timed, instances = (registry.BY_NAME[m].measured for m in registry.COST_TERMS)
    cpu = registry.BY_NAME["Q_r_compute"].measured
    t = tables.numeric(trials, [*timed, instances, cpu])
    q = qr.q_r(rule, instances=t[instances], cpu=t[cpu])
    terms: list[pd.Series] = [*(t[c] for c in timed), q]
    per_trial = pd.DataFrame({"point": trials["point"], "R_a": terms[0], "R_r": terms[1], "B_tot": terms[2],
                              "Q_r": q, "C": model.cost(weights, *terms)})  # type: ignore[arg-type]  # per trial
    saturated = trials["saturated"].map(flag) if "saturated" in trials else pd.Series(False, index=trials.index)
    counted = per_trial[include_saturated | ~saturated.astype(bool)]
    stats = tables.over_repeats(counted, "point", ["R_a", "R_r", "B_tot", "Q_r", "C"])
    return pd.DataFrame({"R_a": stats["R_a_mean"], "R_r": stats["R_r_mean"], "B_tot": stats["B_tot_mean"],
                         "Q_r": stats["Q_r_mean"], "C_measured": stats["C_mean"], "C_ci95_lo": stats["C_ci95_lo"],
                         "C_ci95_hi": stats["C_ci95_hi"],
                         "counted_repeats": counted.groupby("point", sort=False).size()}).rename_axis("point")


def cost_table(points: pd.DataFrame, weights: Weights, swept: list[str], rule: str = "cpu",
               include_saturated: bool = False, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every point of the sweep's own time scale, costed measured, with the fitted model and with the configured
    one, each with its Q_r under the same `rule` (harness.analysis.qr); cheapest measured first, NaN last,
    `rank_model` the fitted model's own ranking. The columns a reader needs first come first (rank, design,
    the design keys, C measured with its interval, the fitted model's C and rank), so a terminal that shows
    only the first few still shows the answer.

    With the `trials` (FitResult.trials), the measured C is the mean of the trials' own costs with its 95%
    interval (`C_ci95_lo`, `_hi`), over the trials whose host did not saturate: a point ranks after every
    other, on both sides, only when none of its trials counts. Without them (points alone), the means over
    repeats are costed and a point with any saturated repeat (`saturated`: how many) ranks last, unless
    `include_saturated`."""
    p = points[points["time_scale"] == primary_scale(points)]
    no_cpu = pd.Series(math.nan, index=p.index)  # the configured model has no CPU figure
    q = {"mean": qr.q_r(rule, instances=p["instances_extra"], cpu=p["Q_r_compute_mean"]),
         "fitted": qr.q_r(rule, instances=p["Q_r_fitted"], cpu=p["Q_r_compute_fitted"]),
         "model": qr.q_r(rule, instances=p["Q_r_model"], cpu=no_cpu)}
    terms: dict[str, list[pd.Series]] = {k: [p[f"R_a_{k}"], p[f"R_r_{k}"], p[f"B_tot_{k}"], q[k]] for k in q}
    cost = {kind: model.cost(weights, *terms[kind]) for kind in q}  # type: ignore[arg-type]  # per point
    keys = design_keys(p, swept)
    saturated = p["saturated"] if "saturated" in p else pd.Series(0, index=p.index)
    rows = p[["design", "mechanism", *keys]].assign(
        C_measured=cost["mean"], C_ci95_lo=math.nan, C_ci95_hi=math.nan, C_model_fitted=cost["fitted"],
        repeats=p["repeats"], R_a=p["R_a_mean"], R_r=p["R_r_mean"], B_tot=p["B_tot_mean"], Q_r=q["mean"],
        Q_r_fitted=q["fitted"], C_model=cost["model"], saturated=saturated, point=p["point"])
    if trials is None:
        rows["counted"] = include_saturated | (rows["saturated"] == 0)  # else ranked after every counted point
    else:
        by_trial = trial_costs(trials[trials["point"].isin(p["point"])], weights, rule, include_saturated)
        measured = by_trial.reindex(rows["point"]).set_index(rows.index)
        for column in ("R_a", "R_r", "B_tot", "Q_r", "C_measured", "C_ci95_lo", "C_ci95_hi"):
            rows[column] = measured[column]
        rows["counted"] = measured["counted_repeats"].fillna(0) > 0
        rows["left_out"] = rows["repeats"] - measured["counted_repeats"].fillna(0).astype(int)
    behind = (~rows["counted"]).astype(int)

    def rank(column: str) -> pd.Series:
        order = pd.DataFrame({"behind": behind, "nan": rows[column].isna(), "c": rows[column]})
        ranked = order.sort_values(["behind", "nan", "c"], kind="stable").index
        return pd.Series(range(1, len(rows) + 1), index=ranked).reindex(rows.index)

    rows.insert(list(rows.columns).index("repeats"), "rank_model", rank("C_model_fitted"))
    rows.insert(0, "rank", rank("C_measured"))
    return rows.sort_values("rank").reset_index(drop=True)


# --- the fitted model between and beyond the measured points -----------------------------------------------------


@dataclass
class Candidate:
    """One configuration the fitted model is costed at: the design keys' values, and the model's figures."""

    design: str
    mechanism: str
    values: dict[str, Value]
    measured: bool
    metrics: model.Metrics
    q_r_compute: float

    def cost(self, w: Weights, rule: str) -> float:
        return model_cost(w, self.metrics, rule, self.q_r_compute)


def _value_text(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(values: dict[str, Value]) -> str:
    """`n=6, s_p=1`: a point by its design keys only."""
    return ", ".join(f"{k}={_value_text(v)}" for k, v in values.items()) or "the base configuration"


class ModelGrid:
    """The fitted model costed over the measured ranges of the design keys: at every measured point, and from
    each one along each key (every integer between the smallest and largest measured value of an integer key,
    17 geometric steps for a real one), plus one step beyond each end, so an optimum at an unmeasured value or
    beyond the measured range is found and named. Built once per sweep; costed per weight set."""

    def __init__(self, points: pd.DataFrame, record: SweepRecord, fit: FittedModel) -> None:
        p = points[points["time_scale"] == primary_scale(points)]
        self.keys = design_keys(p, list(record.get("swept") or []))
        base = (record.get("spec") or {}).get("base") or {}
        overrides = {q["id"]: q.get("overrides", {}) for q in record.get("points", [])}
        self.ranges: dict[tuple[str, str], dict[str, tuple[list[Value], list[Value]]]] = {}
        self.inside: list[Candidate] = []
        self.beyond: list[Candidate] = []
        cache: dict[tuple, Candidate | None] = {}
        inside: dict[int, Candidate] = {}
        beyond: dict[int, Candidate] = {}
        for group, mine in p.groupby(["design", "mechanism"], sort=False) if self.keys else ():
            design, mechanism = str(group[0]), str(group[1])  # type: ignore[index]
            measured = {self._key(r[self.keys]) for _, r in mine.iterrows()}
            spans = {k: self._span(mine[k]) for k in self.keys}
            self.ranges[(design, mechanism)] = spans
            for _, row in mine.iterrows():
                start = {k: row[k] for k in self.keys}
                for key in self.keys:
                    for into, values in ((inside, spans[key][0]), (beyond, spans[key][1])):
                        for v in values:
                            values_ = {**start, key: v}
                            ident = (design, mechanism, self._key(pd.Series(values_)))
                            if ident not in cache:
                                cache[ident] = self._evaluate(base, overrides.get(row["point"], {}), design,
                                                              mechanism, values_, ident[2] in measured, fit)
                            found = cache[ident]
                            if found is not None:
                                into[id(found)] = found
        self.inside = list(inside.values())
        self.beyond = [c for i, c in beyond.items() if i not in inside]

    @staticmethod
    def _key(values: pd.Series) -> tuple:
        return tuple(round(float(v), 6) if isinstance(v, int | float | np.number) else v for v in values)

    @staticmethod
    def _span(column: pd.Series) -> tuple[list[Value], list[Value]]:
        """(the values between the smallest and largest measured, one step beyond each end)."""
        values = pd.to_numeric(column, errors="coerce").dropna()
        if values.empty:
            return sorted(set(column)), []
        lo, hi = float(values.min()), float(values.max())
        if all(float(v).is_integer() for v in values):
            return list(range(int(lo), int(hi) + 1)), [int(lo) - 1, int(hi) + 1]
        inside: list[Value] = sorted({*(float(f"{v:.4g}") for v in np.geomspace(lo, hi, 17)), *map(float, values)})
        ratio = (hi / lo) ** (1 / 16) if lo > 0 and hi > lo else 2.0
        return inside, [lo / ratio, hi * ratio]

    @staticmethod
    def _evaluate(base: Settings, overrides: Settings, design: str, mechanism: str,
                  values: dict[str, Value], measured: bool, fit: FittedModel) -> Candidate | None:
        sets = [(k, int(v) if isinstance(v, float) and v.is_integer() and k in ("n", "k", "s_p", "s_o") else v)
                for k, v in values.items()]
        z = line_z(base, overrides, sets)
        if z is None:
            return None
        return Candidate(design, mechanism, dict(sets), measured, model.evaluate(fit.zfit(z)), fit.q_r_compute(z))

    def range_text(self, design: str | None = None, mechanism: str | None = None) -> str:
        """`n = 2..6`: the measured ranges the grid spans (of one design, or of all)."""
        spans: dict[str, list[Value]] = {}
        for (d, m), ranges in self.ranges.items():
            if design is None or (d, m) == (design, mechanism):
                for k, (inside, _) in ranges.items():
                    spans.setdefault(k, []).extend(inside)
        return ", ".join(f"{k} = {_value_text(min(v))}..{_value_text(max(v))}" for k, v in spans.items() if v)

    def best(self, w: Weights, rule: str, design: str | None = None, mechanism: str | None = None
             ) -> tuple[Candidate, float, Candidate | None, float] | None:
        """The fitted model's cheapest candidate inside the measured ranges (of one design, or of all) and its
        C, and the cheapest one step beyond them where that is cheaper still (else None, NaN)."""
        def mine(cs: list[Candidate]) -> list[tuple[float, Candidate]]:
            out = [(c.cost(w, rule), c) for c in cs if design is None or (c.design, c.mechanism) == (design, mechanism)]
            return sorted([(cost, c) for cost, c in out if math.isfinite(cost)], key=lambda t: t[0])

        inside = mine(self.inside)
        if not inside:
            return None
        c_in, best = inside[0]
        out = mine(self.beyond)
        further = out[0] if out and out[0][0] < c_in else None
        return best, c_in, (further[1] if further else None), (further[0] if further else math.nan)


# --- the optimum, in words ----------------------------------------------------------------------------------------


def _keys_of(rows: pd.DataFrame) -> list[str]:
    return [k for k in rows.columns if k not in COST_COLUMNS and k not in ("design", "mechanism")]


def _describe(row: pd.Series, keys: list[str]) -> str:
    return describe({k: row[k] for k in keys})


def _interval(row: pd.Series) -> tuple[float, float] | None:
    """A row's measured 95% interval of C, where the trials gave one (two or more counted repeats)."""
    lo, hi = row.get("C_ci95_lo", math.nan), row.get("C_ci95_hi", math.nan)
    return (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None


def _measured_text(row: pd.Series, keys: list[str], design: bool = False) -> str:
    where = f"{row['design']} ({row['mechanism']}), " if design else ""
    ci = _interval(row)
    spread = f" (95% interval {ci[0]:.4g}..{ci[1]:.4g})" if ci else " (no interval: one counted repeat)"
    return (f"measured best {where}{_describe(row, keys)}, C = {row['C_measured']:.4g}{spread}, fitted model "
            f"there {row['C_model_fitted']:.4g}")


def _verdict(best: pd.Series, by_model: pd.Series, keys: list[str], design: bool = False) -> str:
    """Which measured point the fitted model ranks best: the measured optimum ("the model agrees"), a tie with
    it within the measurement (their 95% intervals overlap: the measurement cannot tell them apart), or a
    different point."""
    head = "the fitted model's best measured point: "
    if not math.isfinite(by_model["C_model_fitted"]):
        return head + "none, the fitted model has no C here (see the Q_r note)"
    if by_model["point"] == best["point"]:
        return head + "the same, the model agrees"
    picks = head + (f"{by_model['design']}, " if design else "") + _describe(by_model, keys)
    a, b = _interval(best), _interval(by_model)
    if a and b and by_model["counted"]:
        tie = "a tie within the measured 95% intervals" if a[0] <= b[1] and b[0] <= a[1] else \
            "outside the measured 95% intervals"
        return (f"{picks}, measured C = {by_model['C_measured']:.4g} (95% interval {b[0]:.4g}..{b[1]:.4g}): "
                f"{tie}")
    return f"{picks}, measured C = {by_model['C_measured']:.4g} (no interval to tell them apart)"


def _model_text(grid: ModelGrid | None, w: Weights | None, rule: str, design: str | None = None,
                mechanism: str | None = None) -> str:
    """Where the fitted model's own minimum lies over the measured ranges, and whether it is a measured point
    or beyond the range; empty without a grid (points alone) or where the grid spans nothing."""
    if grid is None or w is None or not grid.keys:
        return ""
    found = grid.best(w, rule, design, mechanism)
    if found is None:
        return ""
    best, c, further, c_further = found
    where = (f"{best.design}, " if design is None else "") + describe(best.values)
    said = (f"; the fitted model's minimum over {grid.range_text(design, mechanism)}: {where}, C = {c:.4g}, "
            + ("a measured point" if best.measured else "which was not measured"))
    if further is not None:
        said += (f"; its C still falls beyond the measured range ({describe(further.values)}: C = "
                 f"{c_further:.4g}): the model's optimum lies outside the measured grid")
    return said


def optimum_lines(rows: pd.DataFrame, grid: ModelGrid | None = None, weights: Weights | None = None,
                  rule: str = "cpu") -> list[str]:
    """The optimum per design and overall: what was measured best, which measured point the fitted model ranks
    best (and whether the measurement can tell the two apart), and, given the `grid`, where the fitted model's
    own minimum lies between and beyond the measured points. Points ranked after the others (saturated ones,
    unless included) are no candidates. A grid attached to `rows.attrs["model_grid"]` (with "weights" and
    "rule") is used when none is given."""
    if grid is None and "model_grid" in rows.attrs:
        grid, weights, rule = rows.attrs["model_grid"], rows.attrs["weights"], rows.attrs["rule"]
    keys = _keys_of(rows)
    lines = []
    for (design, mechanism), mine in rows.groupby(["design", "mechanism"], sort=False):
        by_model = mine.sort_values("rank_model").iloc[0]
        measured = mine[np.isfinite(mine["C_measured"]) & mine["counted"]]
        model_says = _model_text(grid, weights, rule, str(design), str(mechanism))
        if measured.empty:
            why = ("every point of it was measured on a saturated host (include them to rank them anyway)"
                   if (~mine["counted"]).all() else "a weighted metric was not measured, e.g. R_r without a fault")
            pick = (f"the fitted model's best measured point: {_describe(by_model, keys)}, C = "
                    f"{by_model['C_model_fitted']:.4g}" if math.isfinite(by_model["C_model_fitted"])
                    else "the fitted model has no C here (see the Q_r note)")
            lines.append(f"optimum {design} ({mechanism}): no measured C ({why}); {pick}{model_says}")
            continue
        best = measured.sort_values("rank").iloc[0]
        hot = int((~mine["counted"]).sum())
        left_out = (f"; {len(mine) - len(measured)} point(s) left out"
                    + (f" ({hot} measured on a saturated host)" if hot else " (no measured C)")) \
            if len(measured) < len(mine) else ""
        trials_out = int(mine.loc[mine["counted"], "left_out"].sum()) if "left_out" in mine else 0
        if trials_out:
            left_out += f"; {trials_out} trial(s) on a saturated host left out of their points' means"
        lines.append(f"optimum {design} ({mechanism}): {_measured_text(best, keys)}; "
                     f"{_verdict(best, by_model, keys)}{model_says}{left_out}")
    measured = rows[np.isfinite(rows["C_measured"]) & rows["counted"]]
    if len(lines) == 1:  # one design: its optimum is the overall one, said once
        lines[0] = lines[0].replace(":", " (the only design swept, so also the overall optimum):", 1)
    elif not measured.empty:
        best = measured.sort_values("rank").iloc[0]
        by_model = rows.sort_values("rank_model").iloc[0]
        lines.append(f"optimum overall: {_measured_text(best, keys, design=True)}; "
                     f"{_verdict(best, by_model, keys, design=True)}{_model_text(grid, weights, rule)}")
    return lines
