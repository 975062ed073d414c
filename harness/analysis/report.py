"""`harness report DIR`: DIR/report.md, the page a reader opens first, and the paper's Figs 6, 7 and 8
(harness.analysis.figures) from what a sweep measured, beside the model.

Every sentence is written for what the sweep holds: the Q_r rule is explained once (under Optimum); a
figure's caption is the one its drawing generated from the series it drew; a measured zero is said as such
rather than as "falls short by about that much"; a metric the fitted model still misses is flagged like the
others; t_r of a fault that was not aimed at the worst moment is said to be held against a worst case.
Points at another time scale than the sweep's own (calibration points for the fit) are left out of the
figures and the ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from harness.analysis import crash_costs, fit, qr, tables
from harness.analysis.figures import Figure, fig6, fig7, fig8
from harness.analysis.optimum import ModelGrid
from harness.analysis.sweep_folder import SweepRecord
from harness.measure import metrics
from harness.model import registry

Weights = tuple[float, float, float, float]

# Fig 8's three weight sets (the paper gives their intent, not their numbers): chosen so that the model at
# t_m = 24 s, h_r = 2 reproduces the paper's optima (docs/analysis.md): n in 5..8, the largest n, the smallest n.
DEFAULT_WEIGHTS: list[tuple[str, Weights, str]] = [
    ("availability and recovery", (1.0, 1.0, 0.0005, 0.005), "tab:green"),
    ("recovery only", (0.0, 1.0, 0.0, 0.0), "tab:red"),
    ("resources", (0.1, 0.1, 0.001, 0.01), "tab:blue"),
]
FLAGGED = registry.FLAGGED  # the workflow times and Eq 10's terms: judged against the measured interval
UNITS = registry.UNITS
LARGE_ERROR = 0.05  # an error after fitting above this (mean or max) is flagged in the Model error table
RECOVERY = ("t_r", "R_r")  # the metrics a worst-case model bounds rather than predicts off the worst moment


@dataclass
class ReportResult:
    path: Path
    figures: list[Figure]
    lines: list[str]


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
    grid = ModelGrid(result.points, record, result.fit)
    optimum: list[str] = []
    for name, w, _ in sets:
        rows = fit.cost_table(result.points, w, swept, rule, include_saturated, trials=result.trials)
        optimum += [f"**{name}** (alpha, beta, gamma, delta = {', '.join(f'{v:g}' for v in w)}):", ""]
        optimum += [f"- {line}" for line in fit.optimum_lines(rows, grid, w, rule)] + [""]
    path = out / "report.md"
    path.write_text(_markdown(out, record, result, figures, optimum, ts, rule, include_saturated), encoding="utf-8")
    lines = [f"{f.name}: {f.path}" if f.path else f"{f.name}: skipped, {f.skipped}" for f in figures]
    return ReportResult(path, figures, lines)


def _saturation_lines(trials: pd.DataFrame, include_saturated: bool) -> list[str]:
    """report.md's line on the host's CPU headroom while the trials ran, naming every saturated trial. The
    figure beside the flag is the flag's own statistic (the share of the load with every core >= 95% busy);
    the mean busy fraction follows, named as what it is."""
    busy = tables.numeric(trials, ["host_busy", "host_full"])
    if busy["host_busy"].isna().all():
        return ["- Host CPU: not recorded (trial folders from before the saturation guard)."]
    hot = trials[trials["saturated"].astype(bool)]
    line = (f"- Host CPU while the load ran (the whole host, other users included): every core >= 95% busy for "
            f"{busy['host_full'].median():.0%} of the load (median over trials), {busy['host_full'].max():.0%} "
            f"max; saturated (>= {metrics.SATURATED_FULL:.0%} of the load): {len(hot)} of {len(trials)} trial(s); "
            f"mean busy {busy['host_busy'].median():.0%} median, {busy['host_busy'].max():.0%} max")
    if hot.empty:
        return [line + "."]
    names = ", ".join(f"{r['trial']} ({float(r['host_full']):.0%} of the load full, {float(r['host_busy']):.0%} "
                      "mean busy)" for _, r in hot.iterrows())
    what = ("counted in the optimum all the same (asked for)" if include_saturated else
            "they measured the host more than the design, so they are left out of their points' costs (a point "
            "all of whose repeats saturated leaves every optimum)")
    return [f"{line}: {names}; {what}."]


def not_at_worst(points: pd.DataFrame) -> pd.DataFrame:
    """The points whose fault was not aimed at the model's worst moment (fault_at other than `worst`): the
    model's t_r is a worst case, an upper bound there, not a prediction."""
    if "fault_at" not in points:
        return points.iloc[0:0]
    faulty = points["fault"].astype(str) != "none" if "fault" in points else True
    return points[faulty & (points["fault_at"].astype(str) != "worst")]


def _outside_lines(points: pd.DataFrame) -> list[str]:
    """report.md's list of the points where the model lies outside the measured 95% interval of the mean."""
    judged = int(sum(points[f"{m}_ci95_lo"].notna().sum() for m in FLAGGED if f"{m}_ci95_lo" in points))
    md = ["### Where the model lies outside the measured 95% interval", ""]
    if not judged:
        return [*md, "No point has two or more repeats: no interval to judge the model by.", ""]
    off_worst = set(not_at_worst(points)["point"])
    for model_, name in (("fitted", "fitted"), ("model", "configured")):
        out = tables.outside_interval(points, FLAGGED, model_)
        md += [f"- **{name} model**: {len(out)} of {judged} (point, metric) pairs outside"
               + (":" if len(out) else ".")]
        if len(out):
            note = [("fault not at the worst moment: the model is an upper bound" if p in off_worst and m in RECOVERY
                     else "") for p, m in zip(out["point"], out["metric"], strict=True)]
            out = out.assign(unit=out["metric"].map(UNITS), off=out["off"].map(_pct), note=note)
            md += ["", tables.markdown(out, ["point", "metric", "unit", "mean", "ci95_lo", "ci95_hi", "model", "off",
                                             *(["note"] if any(note) else [])], digits=4)]
    return [*md, ""]


def _error_lines(result: fit.FitResult, points: pd.DataFrame) -> list[str]:
    """The Model error section: the table, errors after fitting above LARGE_ERROR flagged, and what t_r means
    where the fault was not at the worst moment."""
    e = result.errors
    flags = [("**large**" if max(r["after_mean"], r["after_max"]) > LARGE_ERROR else "")
             if math.isfinite(r["after_max"]) else "" for _, r in e.iterrows()]
    errors = e.assign(unit=e["metric"].map(UNITS), flag=flags,
                      **{f"{side}, {stat}": e[f"{side}_{stat}"].map(_pct) for side in ("before", "after")
                         for stat in ("mean", "max")})
    md = ["", "## Model error", "",
          "Relative error |model - measured| / measured over the points (means over repeats): with the configured "
          f"parameters (before) and with the fitted ones (after; in-sample). An error after fitting above "
          f"{LARGE_ERROR:.0%} (mean or max) is flagged **large**: the fitted model does not carry that metric. "
          "Q_r_compute has no configured model (it has no CPU costs), hence no error before fitting.", "",
          tables.markdown(errors, ["metric", "unit", "points", "before, mean", "before, max", "after, mean",
                                   "after, max", "flag"]), ""]
    large = [f"{m} ({_pct(a)} mean, {_pct(x)} max)" for m, a, x, f in
             zip(e["metric"], e["after_mean"], e["after_max"], flags, strict=True) if f]
    if large:
        md += [f"Flagged: {', '.join(large)}.", ""]
    off = not_at_worst(points)
    if len(off):
        where = ", ".join(f"{p} ({at})" for p, at in zip(off["point"], off["fault_at"], strict=True))
        md += [f"t_r and R_r of {len(off)} point(s) come from a fault that was not aimed at the worst moment: "
               f"{where}. The model's t_r is a worst case, so there it is an upper bound, and a measured t_r below "
               "it is expected, not an error of the model; their t_r and R_r errors above count against it all "
               "the same.", ""]
    return md


def _raw_ratio_note() -> str:
    """What summary.csv's raw CPU ratio is, under whatever name summary.csv gives it now (read at run time:
    it is the measurement's column, not the report's), or nothing once it is gone."""
    from harness.measure.summary import SUMMARY_COLUMNS

    raw = [c for c in SUMMARY_COLUMNS if c == "cpu_ratio_to_monolith"]
    return (f" Each trial's summary.csv also holds {', '.join(f'`{c}`' for c in raw)}: CPU per workflow over the "
            "monolith's, a raw ratio that is no Q_r of either rule; no figure or table here uses it.") if raw else ""


def _crash_lines(result: fit.FitResult) -> list[str]:
    """How far the crashes came after the last heartbeat the survivor received (the model assumes none): said
    as a shortfall of measured t_r only where it is one."""
    crash = next((p for p in result.fit.params if p.name == "fault.crash_after_heartbeat"), None)
    if not crash or not math.isfinite(crash.value):
        return []
    if abs(crash.value) < 5e-4:
        return ["t_r and R_r are a worst case before and after fitting, and the measured crashes were one: each "
                "came right after a heartbeat that reached the survivor (0 s on average, paper), as the model "
                "assumes.", ""]
    return [f"t_r and R_r stay a worst case after fitting: the model assumes the crash comes right after a heartbeat "
            f"went out; the measured crashes came on average {crash.value:.3g} s (paper) after the last heartbeat "
            f"that reached the survivor, so measured t_r falls short of the model by about {crash.value:.3g} s.", ""]


def _anomalies(trials: pd.DataFrame) -> str:
    """The checker's safety anomalies summed over the trials whose history can show them (docs/checker.md);
    n/a where none can (black-box targets), never a 0 that nothing measured."""
    anomalies = tables.numeric(trials, ["concurrent_owners", "double_effects"])
    known = anomalies.notna().all(axis=1)
    if not known.any():
        return "concurrent owners and double effects n/a (no trial's history shows who drove a workflow)"
    total = anomalies[known].sum()
    where = "" if known.all() else f" (in the {int(known.sum())} of {len(trials)} trials whose history shows it)"
    return (f"{total['concurrent_owners']:.0f} driven by two owners at once (concurrent_owners), "
            f"{total['double_effects']:.0f} task effects applied twice in one epoch (double_effects){where}")


def _markdown(out: Path, record: SweepRecord, result: fit.FitResult, figures: list[Figure], optimum: list[str],
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
           f"{total['duplicated']:.0f} completed twice (duplicates); {_anomalies(trials)}.",
           *([load_line] if load_line else []),
           *_saturation_lines(trials, include_saturated),
           f"- Machine: {machine.get('hostname', '?')}, {machine.get('cpus', '?')} CPUs, "
           f"{machine.get('memory_gib', '?')} GiB, kernel {machine.get('kernel', '?')}, Python "
           f"{machine.get('python', '?')}.",
           f"- Commit: {', '.join(commits)}; started {record.get('started', '?')}, {len(sessions)} session(s).",
           "- Files: `trials.csv` (one row per trial), `points.csv` (per point: measured mean/min/max/std and 95% "
           "interval beside both models), `fit.csv`, `model_error.csv`, `trials/<point>-r<k>/` (each trial's full "
           "history)." + _raw_ratio_note(), "",
           "<details><summary>Spec</summary>", "", "```yaml", yaml.safe_dump(spec, sort_keys=False).strip(), "```",
           "", "</details>", "", "## Optimum (Eq 10 on the measured points)", "",
           "C has no unit (the weights carry the metrics' units). Each line gives what was measured best (the mean "
           "of its trials' C, with the 95% interval where two or more repeats count), which measured point the "
           "fitted model ranks best, and where the fitted model's own minimum lies over the measured ranges of the "
           "swept design parameters: whether it is a measured point, and whether the model's C still falls beyond "
           "the range (its optimum then lies outside the measured grid). Only swept design parameters name a point.",
           "", f"{qr.note(rule, result.fit.cpu_costs is not None)} (`--qr` picks the rule; Fig 8 uses the same.)", ""]
    md += optimum
    md += _error_lines(result, result.points[result.points["time_scale"] == ts])
    md += _outside_lines(result.points[result.points["time_scale"] == ts])
    md += _crash_lines(result)
    md += crash_costs.lines(out, record)
    md += ["## Figures", ""]
    for f in figures:
        if f.path:
            md += [f"### {f.name}", "", f"![{f.name}]({f.path.name})", "", f.caption, ""]
        else:
            md += [f"### {f.name}", "", f"Skipped: {f.skipped}.", ""]
    md += ["## Fitted parameters", "", "Least squares over every finished trial's history (`harness fit`); "
           "time parameters in paper seconds, overheads in wall milliseconds.", ""]
    md += [f"- {n}" for n in result.notes]
    primary = result.points[result.points["time_scale"] == ts]
    off = not_at_worst(primary)
    shown = {"t_c meas [s]": "t_c_mean", "t_r meas [s]": "t_r_mean", **({"fault at": "fault_at"} if len(off) else {}),
             "R_a meas": "R_a_mean", "R_r meas": "R_r_mean", "B_tot meas [kB/s]": "B_tot_mean",
             "Q_r_compute meas": "Q_r_compute_mean"} | \
        {f"{m} fitted model{unit}": f"{m}_fitted" for m, unit in (("R_a", ""), ("R_r", ""), ("B_tot", " [kB/s]"),
                                                            ("Q_r_compute", ""))} | \
        {"host full": "host_full", "saturated": "saturated"}
    points = result.points.reindex(columns=["point", "repeats", *shown.values()]).set_axis(
        ["point", "repeats", *shown], axis=1)
    points_note = ["Ratios (R_a, R_r) have no unit; Q_r_compute is in monolith-equivalents; `host full` is the mean "
                   "share of the load during which every core was >= 95% busy (the saturation flag's statistic), "
                   "`saturated` how many repeats it flagged."
                   + (" `fault at` other than `worst`: the model's t_r and R_r are an upper bound there." if len(off)
                      else ""), ""]
    md += ["", tables.markdown(result.params.fillna({"configured": ""}),
                               ["parameter", "value", "stderr", "configured", "unit", "observations"]),
           "", "## Points", "", *points_note, tables.markdown(points, digits=3), ""]
    return "\n".join(md)
