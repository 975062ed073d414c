"""`harness report DIR`: the paper's Figs 6, 7 and 8 from what a sweep measured, beside the model, and
DIR/report.md, the page a reader opens first.

Each figure is drawn from whatever the sweep holds: Fig 6 needs points that differ in h_r only, Figs 7 and
8 points that differ in n only; a figure without such data is skipped and the report says why. Markers are
measured means over the repeats with their Student's t 95% interval; solid lines are the model with the
fitted parameters, thin dotted lines the model with the configured ones. Points at another time scale than
the sweep's own (calibration points for the fit) are left out of the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from harness import model
from harness.analysis import explore, fit, qr, tables
from harness.errors import ConfigError
from harness.plan import config
from harness.plan.config import Experiment

Weights = tuple[float, float, float, float]

# Fig 8's three weight sets (the paper gives their intent, not their numbers): chosen so that the model at
# t_m = 24 s, h_r = 2 reproduces the paper's optima (docs/analysis.md): n in 5..8, the largest n, the smallest n.
DEFAULT_WEIGHTS: list[tuple[str, Weights, str]] = [
    ("availability and recovery", (1.0, 1.0, 0.0005, 0.005), "tab:green"),
    ("recovery only", (0.0, 1.0, 0.0, 0.0), "tab:red"),
    ("resources", (0.1, 0.1, 0.001, 0.01), "tab:blue"),
]
SP_COLOURS = {1: "goldenrod", 2: "tab:blue", 3: "tab:red"}  # Fig 7: yellow, blue, red
TH_COLOURS = {3.0: "goldenrod", 5.0: "tab:red"}  # Fig 6: yellow for 3 intervals, red for 5
STYLE = {"centralised": "-", "distributed": "--", "monolith": ":"}
MARKER = {"centralised": "o", "distributed": "s", "monolith": "^"}


@dataclass
class Group:
    """Points that differ only in the x key: one line of a figure."""

    key: tuple
    design: str
    mechanism: str
    points: list[dict[str, Any]] = field(default_factory=list)  # rows of points.csv
    overrides: dict[str, Any] = field(default_factory=dict)  # of the first point, for the model lines

    @property
    def z(self) -> dict[str, Any]:
        return self.points[0]


@dataclass
class Figure:
    name: str
    path: Path | None
    caption: str
    skipped: str = ""


@dataclass
class ReportResult:
    path: Path
    figures: list[Figure]
    lines: list[str]


# --- data ------------------------------------------------------------------------------------------------


def _round(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


def groups_by(points: list[dict[str, Any]], overrides: dict[str, dict], x: str, ignore: tuple[str, ...],
              swept: list[str]) -> list[Group]:
    """Points grouped by every swept key except x (and the keys in `ignore`), sorted by x; none unless some
    group has two or more x values (a single point of another group is then shown beside the lines)."""
    keys = ["design", "mechanism", *[k for k in swept if k not in (x, "design", "mechanism", *ignore)]]
    out: dict[tuple, Group] = {}
    for p in points:
        key = tuple(_round(p.get(k)) for k in keys)
        g = out.setdefault(key, Group(key, p["design"], p["mechanism"], overrides=overrides.get(p["point"], {})))
        g.points.append(p)
    for g in out.values():
        g.points.sort(key=lambda p: p[x])
    if not any(len({_round(p[x]) for p in g.points}) >= 2 for g in out.values()):
        return []
    return list(out.values())


def _span(groups: list[Group], x: str) -> tuple[float, float]:
    values = [p[x] for g in groups for p in g.points]
    return min(values), max(values)


def line_z(base: dict[str, Any], overrides: dict[str, Any], sets: list[tuple[str, Any]]) -> Experiment | None:
    """z at the point `overrides` + `sets` of a model line, or None where it is not valid."""
    try:
        return config.build(config.apply_overrides(base, [*overrides.items(), *sets]))
    except ConfigError:
        return None


def model_line(base: dict[str, Any], overrides: dict[str, Any], sets: list[tuple[str, Any]],
               the_fit: fit.Fit | None) -> tuple[model.Metrics | None, model.Metrics | None]:
    """The model (configured, fitted) at the point `overrides` + `sets`, or Nones where z is not valid."""
    z = line_z(base, overrides, sets)
    if z is None:
        return None, None
    return model.evaluate(z), (model.evaluate(the_fit.zfit(z)) if the_fit else None)


def _bars(points: list[dict[str, Any]], metric: str) -> list[tuple[float, float, float]]:
    """(mean, 95% interval low, high) of a metric over each point's repeats, from points.csv's statistics; a
    point of one repeat has no interval and gets no bar."""
    return [_interval(p[f"{metric}_mean"], p[f"{metric}_ci95_lo"], p[f"{metric}_ci95_hi"]) for p in points]


def _interval(mean: float, lo: float, hi: float) -> tuple[float, float, float]:
    return (mean, lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (mean, mean, mean)


def _errorbar(ax: Any, xs: list[float], stats: list[tuple[float, float, float]], colour: str, design: str,
              label: str) -> None:
    keep = [i for i, s in enumerate(stats) if math.isfinite(s[0])]
    if not keep:
        return
    ax.errorbar([xs[i] for i in keep], [stats[i][0] for i in keep],
                yerr=[[stats[i][0] - stats[i][1] for i in keep], [stats[i][2] - stats[i][0] for i in keep]],
                fmt=MARKER.get(design, "o"), color=colour, ecolor=colour, capsize=3, markersize=6, linestyle="none",
                label=label, markerfacecolor=colour if design == "centralised" else "white", markeredgewidth=1.5,
                zorder=3)


def _lines(ax: Any, xs: np.ndarray, configured: list[float], fitted: list[float], colour: str, design: str) -> None:
    style = STYLE.get(design, "-")
    if any(math.isfinite(v) for v in fitted):
        ax.plot(xs, fitted, style, color=colour, linewidth=1.8, zorder=2)
    ax.plot(xs, configured, style, color=colour, linewidth=0.8, alpha=0.5, zorder=1)


def _finish_panels(fig: Any, path: Path, panels: list[tuple[Any, str, str]], suptitle: str) -> None:
    """Label each (axes, y label, title) panel, give it a legend where it has labelled lines, title the
    figure and write it."""
    for ax, ylabel, title in panels:
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(suptitle, fontsize=12)
    _finish(fig, path)


def _finish(fig: Any, path: Path, extra: list[Any] | None = None) -> None:
    """The marker/line conventions once, under the panels; then save."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="grey", marker="o", linestyle="none", label="measured: mean, 95% interval"),
               Line2D([], [], color="grey", linewidth=1.8, label="model, fitted parameters"),
               Line2D([], [], color="grey", linewidth=0.8, alpha=0.6, label="model, configured parameters"),
               Line2D([], [], color="grey", linestyle="-", marker="o", label="centralised"),
               Line2D([], [], color="grey", linestyle="--", marker="s", markerfacecolor="white", label="distributed"),
               *(extra or [])]
    fig.legend(handles=handles, fontsize=8.5, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- Fig 6 --------------------------------------------------------------------------------------------------


def fig6(points: list[dict[str, Any]], record: dict[str, Any], the_fit: fit.Fit, path: Path) -> Figure:
    base = (record.get("spec") or {}).get("base") or {}
    overrides = {p["id"]: p.get("overrides", {}) for p in record.get("points", [])}
    swept = list(record.get("swept") or [])
    groups = [g for g in groups_by(points, overrides, "h_r", ("t_h", "t_h_mult", "time_scale"), swept)
              if g.design != "monolith"]
    # one line per t_h multiple too: split each group by t_h / (1 / h_r)
    lines: list[tuple[Group, float]] = []
    for g in groups:
        by_mult: dict[float, Group] = {}
        for p in g.points:
            mult = round(p["t_h_mult"], 3)
            sub = by_mult.setdefault(mult, Group((*g.key, mult), g.design, g.mechanism, overrides=g.overrides))
            sub.points.append(p)
        lines += [(sub, mult) for mult, sub in by_mult.items()]
    if not any(len({p["h_r"] for p in g.points}) >= 2 for g, _ in lines):
        return Figure("Fig 6", None, "", "no points that differ in h_r only (the Fig 6 spec sweeps h_r)")
    fig, (ax_r, ax_b) = plt.subplots(1, 2, figsize=(12, 4.8))
    seen_b: set[str] = set()
    lo, hi = _span([g for g, _ in lines], "h_r")
    for g, mult in lines:
        colour = TH_COLOURS.get(mult, "tab:purple")
        xs = [p["h_r"] for p in g.points]
        dense = np.geomspace(lo, hi, 40)
        conf, fitted, b_conf, b_fit = [], [], [], []
        for x in dense:
            mc, mf = model_line(base, g.overrides, [("h_r", float(x)), ("t_h_mult", mult)], the_fit)
            conf.append(mc.R_r if mc else math.nan)
            fitted.append(mf.R_r if mf else math.nan)
            b_conf.append(mc.B_tot if mc else math.nan)
            b_fit.append(mf.B_tot if mf else math.nan)
        label = f"{g.design}, t_h = {mult:g}/h_r"
        _errorbar(ax_r, xs, _bars(g.points, "R_r"), colour, g.design, label)
        _lines(ax_r, dense, conf, fitted, colour, g.design)
        if g.design not in seen_b:  # B_tot does not depend on t_h: one line per design
            seen_b.add(g.design)
            _errorbar(ax_b, xs, _bars(g.points, "B_tot"), "tab:blue", g.design, g.design)
            _lines(ax_b, dense, b_conf, b_fit, "tab:blue", g.design)
    for ax in (ax_r, ax_b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("heartbeat rate h_r [1/s]")
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    _finish_panels(fig, path, [(ax_r, "recovery ratio R_r = t_r / t_c",
                                "R_r against h_r (yellow: t_h = 3/h_r, red: t_h = 5/h_r)"),
                               (ax_b, "B_tot [kB/s]", "B_tot against h_r (independent of t_h)")],
                   "Fig 6: recovery ratio and bandwidth against the heartbeat rate")
    return Figure("Fig 6", path, "R_r (left) and B_tot (right) against h_r; full lines centralised, dashed "
                  "distributed; markers measured (mean, 95% interval over repeats), thick lines the fitted model, "
                  "thin lines the model with the configured parameters.")


# --- Figs 7 and 8 ---------------------------------------------------------------------------------------


def _n_groups(points: list[dict[str, Any]], record: dict[str, Any]) -> tuple[list[Group], dict[str, Any]]:
    base = (record.get("spec") or {}).get("base") or {}
    overrides = {p["id"]: p.get("overrides", {}) for p in record.get("points", [])}
    swept = list(record.get("swept") or [])
    groups = [g for g in groups_by(points, overrides, "n", ("time_scale",), swept) if g.design != "monolith"]
    return groups, base


def _n_colour(g: Group) -> str:
    if g.design == "distributed":
        return "tab:green"
    if g.mechanism == "restart":
        return "tab:gray"
    return SP_COLOURS.get(int(g.z["s_p"]), "tab:purple")


def _n_label(g: Group) -> str:
    if g.design == "distributed":
        return "distributed"
    return "centralised, restart" if g.mechanism == "restart" else f"centralised, s_p = {g.z['s_p']}"


def fig7(points: list[dict[str, Any]], record: dict[str, Any], the_fit: fit.Fit, path: Path) -> Figure:
    groups, base = _n_groups(points, record)
    if not groups:
        return Figure("Fig 7", None, "", "no points that differ in n only (the Fig 7 spec sweeps n)")
    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(12, 4.8))
    lo, hi = _span(groups, "n")
    for g in groups:
        colour = _n_colour(g)
        xs = [p["n"] for p in g.points]
        dense = np.arange(lo, hi + 1)
        conf_r, fit_r, conf_a, fit_a = [], [], [], []
        for x in dense:
            mc, mf = model_line(base, g.overrides, [("n", int(x))], the_fit)
            conf_r.append(mc.R_r if mc else math.nan)
            fit_r.append(mf.R_r if mf else math.nan)
            conf_a.append(mc.R_a if mc else math.nan)
            fit_a.append(mf.R_a if mf else math.nan)
        _errorbar(ax_r, xs, _bars(g.points, "R_r"), colour, g.design, _n_label(g))
        _lines(ax_r, dense, conf_r, fit_r, colour, g.design)
        _errorbar(ax_a, xs, _bars(g.points, "R_a"), colour, g.design, _n_label(g))
        _lines(ax_a, dense, conf_a, fit_a, colour, g.design)
    for ax in (ax_r, ax_a):
        ax.set_xlabel("number of tasks n (t_m fixed)")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _finish_panels(fig, path, [(ax_r, "recovery ratio R_r = t_r / t_c", "R_r against n"),
                               (ax_a, "added time ratio R_a = t_c / t_m", "R_a against n")],
                   "Fig 7: recovery ratio and added time ratio against the number of tasks")
    return Figure("Fig 7", path, "R_r (left) and R_a (right) against n; yellow/blue/red: centralised with s_p = "
                  "1/2/3, green: distributed (dashed); markers measured, thick lines the fitted model, thin lines "
                  "the model with the configured parameters.")


def trial_cost(trials: pd.DataFrame, w: Weights, rule: str) -> pd.Series:
    """C(z) of each trial (trials.csv rows), its Q_r under `rule` (harness.analysis.qr)."""
    m = tables.numeric(trials, ["R_a_measured", "R_r_measured", "B_tot_measured", "instances_extra", "Q_r_compute"])
    terms: list[Any] = [m["R_a_measured"], m["R_r_measured"], m["B_tot_measured"],
                        qr.q_r(rule, instances=m["instances_extra"], cpu=m["Q_r_compute"])]
    return model.cost(w, *terms)  # type: ignore[return-value]


def _model_cost(w: Weights, m: model.Metrics | None, rule: str, q_r_compute: float = math.nan) -> float:
    """C of a modelled z, its Q_r under `rule`: the instance count, or the model's Q_r_compute (NaN for the
    configured model, which has no CPU costs)."""
    return model.cost(w, m.R_a, m.R_r, m.B_tot, qr.q_r(rule, instances=m.Q_r, cpu=q_r_compute)) if m else math.nan


def fig8(points: list[dict[str, Any]], trials: pd.DataFrame, record: dict[str, Any], the_fit: fit.Fit, path: Path,
         weight_sets: list[tuple[str, Weights, str]], rule: str, include_saturated: bool = False) -> Figure:
    groups, base = _n_groups(points, record)
    if any(g.design == "centralised" and g.z["s_p"] == 1 for g in groups):  # the paper's Fig 8: s_p = 1
        groups = [g for g in groups if g.design != "centralised" or (g.z["s_p"] == 1 and g.mechanism != "restart")]
    if not groups:
        return Figure("Fig 8", None, "", "no points that differ in n only (the Fig 8 spec sweeps n)")
    fig, axes = plt.subplots(1, len(weight_sets), figsize=(5 * len(weight_sets), 4.6), squeeze=False)
    lo, hi = _span(groups, "n")
    swept = list(record.get("swept") or [])
    for ax, (name, w, colour) in zip(axes[0], weight_sets, strict=True):
        measured = tables.over_repeats(trials.assign(C=trial_cost(trials, w, rule)), "point", ["C"])
        fitted_at = fit.cost_table(pd.DataFrame(points), w, swept, rule, include_saturated) \
            .set_index("point")["C_model_fitted"]
        for g in groups:
            xs = [p["n"] for p in g.points]
            dense = np.arange(lo, hi + 1)
            zs = [line_z(base, g.overrides, [("n", int(x))]) for x in dense]
            lines = [model_line(base, g.overrides, [("n", int(x))], the_fit) for x in dense]
            conf = [_model_cost(w, mc, rule) for mc, _ in lines]
            fitted = [_model_cost(w, mf, rule, the_fit.q_r_compute(z) if z is not None else math.nan)
                      for (_, mf), z in zip(lines, zs, strict=True)]
            if not any(math.isfinite(c) for c in fitted):  # no CPU fit: the fitted model at the measured n only
                dense, fitted = np.array(xs), [fitted_at.get(p["point"], math.nan) for p in g.points]
                conf = [math.nan] * len(xs)
            stats = [_interval(*measured.loc[p["point"], [f"C_{s}" for s in ("mean", "ci95_lo", "ci95_hi")]])
                     for p in g.points]
            label = g.design if g.design == "distributed" else _n_label(g)
            _errorbar(ax, xs, stats, colour, g.design, label)  # type: ignore[arg-type]
            _lines(ax, dense, conf, fitted, colour, g.design)
            hot = [bool(p.get("saturated")) and not include_saturated for p in g.points]
            means = [math.nan if h else s[0] for s, h in zip(stats, hot, strict=True)]  # the optimum's candidates
            if any(math.isfinite(m) for m in means):
                best = int(np.nanargmin(means))
                ax.plot([xs[best]], [means[best]], "o", markersize=15, markerfacecolor="none", color=colour,
                        alpha=0.6, zorder=4)
            if any(hot):  # measured on a saturated host: crossed out, and no candidate for the optimum
                ax.plot([x for x, h in zip(xs, hot, strict=True) if h], [s[0] for s, h in zip(stats, hot, strict=True)
                        if h], "x", markersize=12, color="black", zorder=5)
        ax.set_title(f"{name}\nalpha, beta, gamma, delta = {', '.join(f'{v:g}' for v in w)}", fontsize=9)
        ax.set_xlabel("number of tasks n (t_m fixed)")
        ax.set_ylabel("cost C(z), Eq 10")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"Fig 8: cost against n for three weight sets (Q_r: {rule}, measured and model alike)", fontsize=12)
    from matplotlib.lines import Line2D

    ring = Line2D([], [], marker="o", markersize=11, markerfacecolor="none", color="grey", linestyle="none",
                  label="measured optimum")
    _finish(fig, path, [ring])
    return Figure("Fig 8", path, "C(z) against n for each weight set; full lines centralised, dashed distributed; "
                  "markers measured (C of each trial: mean, 95% interval), thick lines the fitted model, thin lines "
                  f"the configured model. {qr.note(rule, the_fit.cpu_costs is not None)}"
                  + (" Under `cpu` the configured model has no C where delta > 0 (no CPU costs): its thin line is "
                     "missing there." if rule == "cpu" else ""))


# --- report.md ------------------------------------------------------------------------------------------


def _pct(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{100 * v:.1f}%"


def build_report(out: Path, weight_sets: list[Weights] | None = None, rule: str = "cpu",
                 include_saturated: bool = False) -> ReportResult:
    """report.md and the figures; points measured on a saturated host are left out of every optimum unless
    `include_saturated` (harness.measure.metrics.saturated)."""
    out = Path(out)
    qr.q_r(rule, instances=0, cpu=0)  # an unknown rule is refused before the fit
    record, _, result = fit.analyse(out)
    fit.write_tables(out, result)
    sets = DEFAULT_WEIGHTS if weight_sets is None else [
        (f"weights {i + 1}", w, colour) for i, (w, (_, _, colour)) in
        enumerate(zip(weight_sets, DEFAULT_WEIGHTS * (len(weight_sets) // 3 + 1), strict=False))]
    ts = fit.primary_scale(result.points)
    primary = result.points[result.points["time_scale"] == ts].to_dict("records")
    figures = [
        fig6(primary, record, result.fit, out / "fig6.png"),  # type: ignore[arg-type]
        fig7(primary, record, result.fit, out / "fig7.png"),  # type: ignore[arg-type]
        fig8(primary, result.trials, record, result.fit, out / "fig8.png", sets, rule,  # type: ignore[arg-type]
             include_saturated),
    ]
    swept = list(record.get("swept") or [])
    optimum: list[str] = []
    for name, w, _ in sets:
        rows = fit.cost_table(result.points, w, swept, rule, include_saturated, trials=result.trials)
        optimum += [f"**{name}** (alpha, beta, gamma, delta = {', '.join(f'{v:g}' for v in w)}):", ""]
        optimum += [f"- {line}" for line in fit.optimum_lines(rows)] + [""]
    path = out / "report.md"
    path.write_text(_markdown(out, record, result, figures, optimum, ts, rule, include_saturated), encoding="utf-8")
    lines = [f"{f.name}: {f.path}" if f.path else f"{f.name}: skipped, {f.skipped}" for f in figures]
    return ReportResult(path, figures, lines)


FLAGGED = ("t_c", "t_r", "R_a", "R_r", "B_tot")


def _saturation_lines(trials: pd.DataFrame, include_saturated: bool) -> list[str]:
    """report.md's line on the host's CPU headroom while the trials ran, naming every saturated trial."""
    busy = tables.numeric(trials, ["host_busy", "host_full"])
    if busy["host_busy"].isna().all():
        return ["- Host CPU: not recorded (trial folders from before the saturation guard)."]
    hot = trials[trials["saturated"].astype(bool)]
    line = (f"- Host CPU while the load ran (the whole host, other users included): busy "
            f"{busy['host_busy'].median():.0%} median, {busy['host_busy'].max():.0%} max; saturated (every core "
            f">= 95% busy for >= 25% of the load): {len(hot)} of {len(trials)} trial(s)")
    if hot.empty:
        return [line + "."]
    names = ", ".join(f"{r['trial']} ({float(r['host_busy']):.0%} busy, {float(r['host_full']):.0%} of the time "
                      "full)" for _, r in hot.iterrows())
    what = ("counted in the optimum all the same (asked for)" if include_saturated else
            "they measured the host more than the design, so their points are left out of every optimum")
    return [f"{line}: {names}; {what}."]


def _outside_lines(points: pd.DataFrame) -> list[str]:
    """report.md's list of the points where the model lies outside the measured 95% interval of the mean."""
    judged = int(sum(points[f"{m}_ci95_lo"].notna().sum() for m in FLAGGED if f"{m}_ci95_lo" in points))
    md = ["### Where the model lies outside the measured 95% interval", ""]
    if not judged:
        return [*md, "No point has two or more repeats: no interval to judge the model by.", ""]
    for model_, name in (("fitted", "fitted"), ("model", "configured")):
        out = tables.outside_interval(points, FLAGGED, model_)
        md += [f"- **{name} model**: {len(out)} of {judged} (point, metric) pairs outside"
               + (":" if len(out) else ".")]
        if len(out):
            md += ["", tables.markdown(out.assign(off=out["off"].map(_pct)), digits=4)]
    return [*md, ""]


def _markdown(out: Path, record: dict[str, Any], result: fit.FitResult, figures: list[Figure], optimum: list[str],
              ts: float, rule: str, include_saturated: bool = False) -> str:
    spec = record.get("spec") or {}
    planned = len(record.get("points", [])) * int(record.get("repeat", 1))
    machine = record.get("machine") or {}
    sessions = record.get("sessions") or []
    commits = sorted({s.get("commit", "?") for s in sessions} | {record.get("commit", "?")})
    trials = result.trials
    total = tables.numeric(trials, ["lost", "duplicated", "completed", "requests", "trial_seconds"]).sum()
    backends = sorted(str(b) for b in trials.get("link_backend", pd.Series(["?"])).unique())
    loads = tables.numeric(trials, ["host_load"])["host_load"].dropna()
    cpus = machine.get("cpus") or 1
    busy = int((loads > cpus).sum())
    load_line = (f"- Host load (1-minute load average when each trial ended, the trial included): median "
                 f"{loads.median():.2f}, max {loads.max():.2f} on {cpus} CPUs"
                 + (f"; {busy} trial(s) ran on an overloaded host, their timings include waiting for the CPU."
                    if busy else ".") if len(loads) else "")
    md = [f"# Sweep report: {Path(str(record.get('spec_file') or out)).name}", ""]
    if spec.get("description"):
        md += [str(spec["description"]).strip(), ""]
    md += ["## What was run", "",
           f"- Trials: {len(trials)} finished of {planned} planned ({len(record.get('points', []))} points x "
           f"{record.get('repeat', 1)} repeats), {total['trial_seconds'] / 60:.1f} min of trial time; load generator "
           f"`{record.get('load')}`, link backend {', '.join(backends)}, time_scale {ts:g}"
           + (" (plus calibration points at other time scales)" if (result.points["time_scale"] != ts).any()
              else "") + ".",
           f"- Workflows: {total['completed']:.0f}/{total['requests']:.0f} completed, {total['lost']:.0f} lost, "
           f"{total['duplicated']:.0f} completed twice (duplicates).",
           *([load_line] if load_line else []),
           *_saturation_lines(trials, include_saturated),
           f"- Machine: {machine.get('hostname', '?')}, {machine.get('cpus', '?')} CPUs, "
           f"{machine.get('memory_gib', '?')} GiB, kernel {machine.get('kernel', '?')}, Python "
           f"{machine.get('python', '?')}.",
           f"- Commit: {', '.join(commits)}; started {record.get('started', '?')}, {len(sessions)} session(s).",
           "- Files: `trials.csv` (one row per trial), `points.csv` (per point: measured mean/min/max/std and 95% "
           "interval beside both models), `fit.csv`, `model_error.csv`, `trials/<point>-r<k>/` (each trial's full "
           "history).", "",
           "<details><summary>Spec</summary>", "", "```yaml", yaml.safe_dump(spec, sort_keys=False).strip(), "```",
           "", "</details>", "", "## Optimum (Eq 10 on the measured points)", "",
           "Measured C uses the means over repeats; the fitted model's own choice is given beside it. "
           f"{qr.note(rule, result.fit.cpu_costs is not None)} (`--qr` picks the rule.)", ""]
    md += optimum
    errors = result.errors.assign(**{f"{side}, {stat}": result.errors[f"{side}_{stat}"].map(_pct)
                                     for side in ("before", "after") for stat in ("mean", "max")})
    md += ["", "## Model error", "",
           "Relative error |model - measured| / measured over the points (means over repeats): with the "
           "configured parameters (before) and with the fitted ones (after; in-sample).", "",
           tables.markdown(errors, ["metric", "points", "before, mean", "before, max", "after, mean", "after, max"]),
           ""]
    md += _outside_lines(result.points[result.points["time_scale"] == ts])
    crash = next((p for p in result.fit.params if p.name == "fault.crash_after_heartbeat"), None)
    if crash and math.isfinite(crash.value):
        md += [f"t_r and R_r stay a worst case after fitting: the model assumes the crash comes right after a "
               f"heartbeat went out; the measured crashes came on average {crash.value:.3g} s (paper) after the "
               "last heartbeat that reached the survivor, so measured t_r falls short of the model by about that "
               "much.", ""]
    md += explore.lines(out, record)
    md += ["## Figures", ""]
    for f in figures:
        if f.path:
            md += [f"### {f.name}", "", f"![{f.name}]({f.path.name})", "", f.caption, ""]
        else:
            md += [f"### {f.name}", "", f"Skipped: {f.skipped}.", ""]
    md += ["## Fitted parameters", "", "Least squares over every finished trial's history (`harness fit`); "
           "time parameters in paper seconds, overheads in wall milliseconds.", ""]
    md += [f"- {n}" for n in result.notes]
    shown = {f"{m} meas": f"{m}_mean" for m in ("t_c", "R_a", "R_r", "B_tot", "Q_r_compute")} | \
        {f"{m} fitted model": f"{m}_fitted" for m in ("R_a", "R_r", "B_tot", "Q_r_compute")} | \
        {"host busy": "host_busy", "saturated": "saturated"}
    points = result.points[["point", "repeats", *shown.values()]].set_axis(["point", "repeats", *shown], axis=1)
    md += ["", tables.markdown(result.params.fillna({"configured": ""}),
                               ["parameter", "value", "stderr", "configured", "unit", "observations"]),
           "", "## Points", "", tables.markdown(points, digits=3), ""]
    return "\n".join(md)
