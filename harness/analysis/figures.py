"""The paper's Figs 6, 7 and 8 from what a sweep measured, beside the model, with captions and keys a reader
cannot misread (issue 24).

Each figure is drawn from whatever the sweep holds: Fig 6 needs points that differ in h_r only, Figs 7 and
8 points that differ in n only. Markers are measured means over the repeats with their Student's t 95%
interval; thick lines are the model with the fitted parameters, thin ones the model with the configured
ones. Every caption, panel title and key is generated from the series actually drawn (`Series`), and each
figure records, from the matplotlib artists themselves just before it is saved, which kinds of artist and
which colours are on the page (`Figure.drawn`, `Figure.colours`): a key or caption that names anything else
is a bug the tests catch. Figs 6 and 7 carry, under each value panel, the models' error relative to the
measured mean in %, on an axis of at least +-5%: a sub-1% gap on an axis that spans 116-119 kB/s looks like
a bad fit, the same gap at its own scale does not. A value axis that does not start at zero says how much
of its top it spans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure as Page
from matplotlib.lines import Line2D
from matplotlib.typing import LineStyleType

from harness import model
from harness.analysis import fit, qr, tables
from harness.analysis.optimum import line_z, model_cost
from harness.analysis.sweep_folder import Settings, SweepRecord
from harness.analysis.tables import Row

Weights = tuple[float, float, float, float]

SP_COLOURS = {1: "goldenrod", 2: "tab:blue", 3: "tab:red"}  # Fig 7: yellow, blue, red
TH_COLOURS = {3.0: "goldenrod", 5.0: "tab:red"}  # Fig 6: yellow for 3 intervals, red for 5
COLOUR_WORDS = {"goldenrod": "yellow", "tab:blue": "blue", "tab:red": "red", "tab:green": "green",
                "tab:gray": "grey", "tab:purple": "purple"}
STYLE: dict[str, LineStyleType] = {"centralised": "-", "distributed": "--", "monolith": ":"}
MARKER = {"centralised": "o", "distributed": "s", "monolith": "^"}
ERROR_AXIS = 5.0  # the error panels span at least +-5%
UNITS = {"R_r": "ratio", "R_a": "ratio", "B_tot": "kB/s", "C": "no unit"}


@dataclass
class Series:
    """One line of a panel as drawn: what the caption and the panel's own legend may name."""

    panel: str
    label: str
    colour: str
    design: str
    measured: int = 0  # markers drawn
    bars: bool = False  # any of them with a 95% interval
    fitted: bool = False  # a thick line with a finite value
    configured: bool = False  # a thin line with a finite value
    curve: list[float] = field(default_factory=list)  # the fitted line (to find lines that coincide)

    @property
    def colour_word(self) -> str:
        return COLOUR_WORDS.get(self.colour, self.colour)


@dataclass
class Figure:
    name: str
    path: Path | None
    caption: str
    skipped: str = ""
    series: list[Series] = field(default_factory=list)
    key: list[tuple[str, str]] = field(default_factory=list)  # the shared key: (label, kind of artist it names)
    legends: list[str] = field(default_factory=list)  # every label of every panel's legend
    drawn: set[str] = field(default_factory=set)  # the kinds of artist on the page ("fitted|centralised", ...)
    labels: set[str] = field(default_factory=set)  # the labels of the artists on the page
    colours: set[str] = field(default_factory=set)  # the colour words of the artists on the page
    ylims: list[tuple[str, tuple[float, float]]] = field(default_factory=list)  # each panel's (y label, y range)


# --- data --------------------------------------------------------------------------------------------------------


@dataclass
class Group:
    """Points that differ only in the x key: one line of a figure."""

    key: tuple
    design: str
    mechanism: str
    points: list[Row] = field(default_factory=list)  # rows of points.csv
    overrides: Settings = field(default_factory=dict)  # of the first point, for the model lines

    @property
    def z(self) -> Row:
        return self.points[0]


def _round(v: object) -> object:
    return round(v, 6) if isinstance(v, float) else v


def groups_by(points: list[Row], overrides: dict[str, Settings], x: str, ignore: tuple[str, ...],
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


def model_line(base: Settings, overrides: Settings, sets: Sequence[tuple[str, object]],
               the_fit: fit.Fit | None) -> tuple[model.Metrics | None, model.Metrics | None]:
    """The model (configured, fitted) at the point `overrides` + `sets`, or Nones where z is not valid."""
    z = line_z(base, overrides, sets)
    if z is None:
        return None, None
    return model.evaluate(z), (model.evaluate(the_fit.zfit(z)) if the_fit else None)


def _bars(points: list[Row], metric: str) -> list[tuple[float, float, float]]:
    """(mean, 95% interval low, high) of a metric over each point's repeats, from points.csv's statistics; a
    point of one repeat has no interval and gets no bar."""
    return [_interval(p[f"{metric}_mean"], p[f"{metric}_ci95_lo"], p[f"{metric}_ci95_hi"]) for p in points]


def _interval(mean: float, lo: float, hi: float) -> tuple[float, float, float]:
    return (mean, lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (mean, mean, mean)


# --- drawing -------------------------------------------------------------------------------------------------------


def _errorbar(ax: Axes, s: Series, xs: list[float], stats: list[tuple[float, float, float]]) -> None:
    keep = [i for i, st in enumerate(stats) if math.isfinite(st[0])]
    if not keep:
        return
    drawn = ax.errorbar([xs[i] for i in keep], [stats[i][0] for i in keep],
                        yerr=[[stats[i][0] - stats[i][1] for i in keep], [stats[i][2] - stats[i][0] for i in keep]],
                        fmt=MARKER.get(s.design, "o"), color=s.colour, ecolor=s.colour, capsize=3, markersize=6,
                        linestyle="none", label=s.label, markerfacecolor=s.colour if s.design == "centralised"
                        else "white", markeredgewidth=1.5, zorder=3)
    drawn.lines[0].set_gid(f"measured|{s.design}")
    s.measured += len(keep)
    s.bars = s.bars or any(stats[i][2] > stats[i][1] for i in keep)


def _lines(ax: Axes, s: Series, xs: np.ndarray | list[float], configured: list[float], fitted: list[float]) -> None:
    style = STYLE.get(s.design, "-")
    if any(math.isfinite(v) for v in fitted):
        ax.plot(xs, fitted, style, color=s.colour, linewidth=1.8, zorder=2, gid=f"fitted|{s.design}")
        s.fitted, s.curve = True, list(fitted)
    if any(math.isfinite(v) for v in configured):
        ax.plot(xs, configured, style, color=s.colour, linewidth=0.8, alpha=0.5, zorder=1,
                gid=f"configured|{s.design}")
        s.configured = True


def _errors(ax: Axes, s: Series, g: Group, x: str, metric: str) -> float:
    """The fitted (filled) and configured (x) model's error at the measured points, % of the measured mean;
    the largest magnitude drawn."""
    xs = [p[x] for p in g.points]
    worst = 0.0
    for kind, marker in (("fitted", MARKER.get(s.design, "o")), ("model", "x")):
        err = [100 * (p[f"{metric}_{kind}"] - p[f"{metric}_mean"]) / abs(p[f"{metric}_mean"])
               if p[f"{metric}_mean"] else math.nan for p in g.points]
        keep = [i for i, e in enumerate(err) if math.isfinite(e)]
        if not keep:
            continue
        ax.plot([xs[i] for i in keep], [err[i] for i in keep], marker, color=s.colour, linestyle="none",
                markersize=6 if kind == "fitted" else 5, markerfacecolor=s.colour if kind == "fitted" else "none",
                gid=f"error-{'fitted' if kind == 'fitted' else 'configured'}|{s.design}", zorder=3)
        worst = max(worst, *(abs(err[i]) for i in keep))
    return worst


def _value_axis(ax: Axes, name: str, unit: str) -> None:
    """The y label of a value panel: the metric and its unit, and, where the axis does not start at zero, the
    share of its top it spans (so a gap's size can be read off)."""
    lo, hi = ax.get_ylim()
    label = f"{name} [{unit}]"
    if lo > 0 and hi > 0:
        label += f"\n(axis from {lo:.4g}, not 0: spans {100 * (hi - lo) / hi:.1f}% of its top)"
    ax.set_ylabel(label, fontsize=9)


def _error_axis(ax: Axes, worst: float) -> None:
    limit = max(ERROR_AXIS, 1.2 * worst)
    ax.set_ylim(-limit, limit)
    ax.axhline(0, color="black", linewidth=0.6, zorder=0)
    ax.set_ylabel(f"model - measured\n[% of measured], axis +-{limit:.3g}%", fontsize=8)
    ax.grid(True, alpha=0.3)


def _record(fig: Page, figure: Figure) -> None:
    """What is on the page, read from the artists: their kinds (gid), labels and colours, and every legend."""
    from matplotlib.colors import to_hex

    words = {to_hex(c): w for c, w in COLOUR_WORDS.items()}
    for ax in fig.axes:
        figure.ylims.append((ax.get_ylabel(), ax.get_ylim()))
        for artist in [*ax.lines, *ax.collections]:
            has_data = not isinstance(artist, Line2D) or np.size(artist.get_xdata()) > 0
            if not has_data or not artist.get_visible():
                continue
            if artist.get_gid():
                figure.drawn.add(str(artist.get_gid()))
            colour = artist.get_color() if isinstance(artist, Line2D) else None
            if isinstance(colour, str) and to_hex(colour) in words and artist.get_gid():
                figure.colours.add(words[to_hex(colour)])
        for container in ax.containers:
            label = container.get_label()
            if label and not label.startswith("_"):
                figure.labels.add(label)
        legend = ax.get_legend()
        if legend:
            figure.legends += [t.get_text() for t in legend.get_texts()]


def _finish(fig: Page, figure: Figure, extra: list[tuple[Line2D, str]] | None = None) -> None:
    """The shared key, of the conventions actually on the page only; then record what is drawn and save."""
    series = figure.series
    designs = [d for d in ("centralised", "distributed") if any(s.design == d and (s.measured or s.fitted)
                                                                for s in series)]
    key: list[tuple[Line2D, str]] = []
    if any(s.measured for s in series):
        text = "measured: mean, 95% interval" if any(s.bars for s in series) else \
            "measured (one repeat a point: no interval)"
        key.append((Line2D([], [], color="grey", marker="o", linestyle="none", label=text), "measured"))
    if any(s.fitted for s in series):
        key.append((Line2D([], [], color="grey", linewidth=1.8, label="model, fitted parameters"), "fitted"))
    if any(s.configured for s in series):
        key.append((Line2D([], [], color="grey", linewidth=0.8, alpha=0.6, label="model, configured parameters"),
                    "configured"))
    for d in designs:
        key.append((Line2D([], [], color="grey", linestyle=STYLE[d], marker=MARKER[d],
                           markerfacecolor="grey" if d == "centralised" else "white", label=d), f"design|{d}"))
    key += extra or []
    figure.key = [(str(h.get_label()), kind) for h, kind in key]
    # as many entries a row as the widest one allows in the figure's width (about 0.075 in a character)
    entry = (max(len(str(h.get_label())) for h, _ in key) + 6) * 0.075 if key else 1.0
    per_row = max(1, min(len(key), int(fig.get_figwidth() * 0.95 // entry)))
    fig.legend(handles=[h for h, _ in key], fontsize=8.5, loc="lower center", ncol=max(per_row, 1), frameon=False)
    rows = math.ceil(len(key) / max(per_row, 1))
    fig.tight_layout(rect=(0, 0.045 * rows + 0.01, 1, 1))
    _record(fig, figure)
    assert figure.path is not None
    fig.savefig(figure.path, dpi=110)
    plt.close(fig)


def _error_key(series: list[Series]) -> list[tuple[Line2D, str]]:
    return [(Line2D([], [], color="grey", marker="o", linestyle="none", label="error of the fitted model, %"),
             "error-fitted"),
            (Line2D([], [], color="grey", marker="x", linestyle="none", label="error of the configured model, %"),
             "error-configured")] if any(s.measured for s in series) else []


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _styles(series: list[Series]) -> str:
    """The caption's sentence on the conventions, for what is drawn only."""
    designs = {s.design for s in series if s.measured or s.fitted}
    lines = [f"{'full' if d == 'centralised' else 'dashed'} lines {d}" for d in ("centralised", "distributed")
             if d in designs]
    parts = [", ".join(lines)] if lines else []
    if any(s.measured for s in series):
        parts.append("markers measured (mean, 95% interval over repeats)" if any(s.bars for s in series)
                     else "markers measured (one repeat a point: no interval)")
    if any(s.fitted for s in series):
        parts.append("thick lines the fitted model")
    if any(s.configured for s in series):
        parts.append("thin lines the model with the configured parameters")
    return "; ".join(parts)


def _named(series: list[Series], panel: str) -> str:
    """`yellow: centralised, s_p = 1; red: ...` for the series of a panel, as drawn."""
    seen = dict.fromkeys((s.colour_word, s.label) for s in series if s.panel == panel and (s.measured or s.fitted))
    return "; ".join(f"{c}: {label}" for c, label in seen)


def _coincide(series: list[Series], panel: str) -> str:
    """A note where two series' fitted lines coincide (one hides the other)."""
    mine = [s for s in series if s.panel == panel and s.fitted]
    notes = []
    for i, a in enumerate(mine):
        for b in mine[i + 1:]:
            both = [(u, v) for u, v in zip(a.curve, b.curve, strict=False) if math.isfinite(u) and math.isfinite(v)]
            if len(both) >= 2 and all(abs(u - v) <= 1e-9 * max(1.0, abs(u)) for u, v in both):
                notes.append(f"the {a.colour_word} and {b.colour_word} model lines of {panel} coincide where both "
                             f"are drawn ({b.colour_word} on top)")
    return "; ".join(notes)


def _th_colour_word(mult: float) -> str:
    """Fig 6's colour word of a t_h multiple."""
    return COLOUR_WORDS[TH_COLOURS.get(mult, "tab:purple")]


# --- Fig 6 ---------------------------------------------------------------------------------------------------------


def fig6(points: list[Row], record: SweepRecord, the_fit: fit.Fit, path: Path) -> Figure:
    base = (record.get("spec") or {}).get("base") or {}
    overrides = {p["id"]: p.get("overrides", {}) for p in record.get("points", [])}
    swept = list(record.get("swept") or [])
    groups = [g for g in groups_by(points, overrides, "h_r", ("t_h", "t_h_mult", "time_scale"), swept)
              if g.design != "monolith"]
    lines: list[tuple[Group, float]] = []  # one line per t_h multiple too: split each group by t_h / (1 / h_r)
    for g in groups:
        by_mult: dict[float, Group] = {}
        for p in g.points:
            mult = round(p["t_h_mult"], 3)
            sub = by_mult.setdefault(mult, Group((*g.key, mult), g.design, g.mechanism, overrides=g.overrides))
            sub.points.append(p)
        lines += [(sub, mult) for mult, sub in by_mult.items()]
    if not any(len({p["h_r"] for p in g.points}) >= 2 for g, _ in lines):
        return Figure("Fig 6", None, "", "no points that differ in h_r only (the Fig 6 spec sweeps h_r)")
    figure = Figure("Fig 6", path, "")
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.6), sharex="col", gridspec_kw={"height_ratios": [3, 1.2]})
    (ax_r, ax_b), (err_r, err_b) = axes
    seen_b: set[str] = set()
    worst = {"R_r": 0.0, "B_tot": 0.0}
    lo, hi = _span([g for g, _ in lines], "h_r")
    dense = np.geomspace(lo, hi, 40)
    for g, mult in lines:
        xs = [p["h_r"] for p in g.points]
        conf, fitted, b_conf, b_fit = [], [], [], []
        for x in dense:
            mc, mf = model_line(base, g.overrides, [("h_r", float(x)), ("t_h_mult", mult)], the_fit)
            conf.append(mc.R_r if mc else math.nan)
            fitted.append(mf.R_r if mf else math.nan)
            b_conf.append(mc.B_tot if mc else math.nan)
            b_fit.append(mf.B_tot if mf else math.nan)
        s = Series("R_r", f"{g.design}, t_h = {mult:g}/h_r", TH_COLOURS.get(mult, "tab:purple"), g.design)
        figure.series.append(s)
        _errorbar(ax_r, s, xs, _bars(g.points, "R_r"))
        _lines(ax_r, s, dense, conf, fitted)
        worst["R_r"] = max(worst["R_r"], _errors(err_r, s, g, "h_r", "R_r"))
        if g.design not in seen_b:  # B_tot does not depend on t_h: one line per design
            seen_b.add(g.design)
            b = Series("B_tot", g.design, "tab:blue", g.design)
            figure.series.append(b)
            _errorbar(ax_b, b, xs, _bars(g.points, "B_tot"))
            _lines(ax_b, b, dense, b_conf, b_fit)
            worst["B_tot"] = max(worst["B_tot"], _errors(err_b, b, g, "h_r", "B_tot"))
    for ax in (ax_r, ax_b, err_r, err_b):
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    for ax in (err_r, err_b):
        ax.set_xlabel("heartbeat rate h_r [1/s]")
    _error_axis(err_r, worst["R_r"])
    _error_axis(err_b, worst["B_tot"])
    _value_axis(ax_r, "recovery ratio R_r = t_r / t_c", UNITS["R_r"])
    _value_axis(ax_b, "B_tot", UNITS["B_tot"])
    mults = "; ".join(dict.fromkeys(f"{c}: t_h = {m:g}/h_r" for c, m in
                                    ((_th_colour_word(m), m) for _, m in lines)))
    ax_r.set_title(f"R_r against h_r ({mults})", fontsize=9)
    ax_b.set_title("B_tot against h_r (independent of t_h: one line per design)", fontsize=9)
    for ax in (ax_r, ax_b):
        _legend(ax)
    fig.suptitle("Fig 6: recovery ratio and bandwidth against the heartbeat rate", fontsize=12)
    figure.caption = (f"R_r (left; {mults}) and B_tot (right; blue) against h_r; {_styles(figure.series)}. Below "
                      "each, the models' error at the measured points, % of the measured mean (filled: fitted, "
                      "x: configured).")
    _finish(fig, figure, _error_key(figure.series))
    return figure


# --- Figs 7 and 8 --------------------------------------------------------------------------------------------------


def _n_groups(points: list[Row], record: SweepRecord) -> tuple[list[Group], Settings]:
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


def fig7(points: list[Row], record: SweepRecord, the_fit: fit.Fit, path: Path) -> Figure:
    groups, base = _n_groups(points, record)
    if not groups:
        return Figure("Fig 7", None, "", "no points that differ in n only (the Fig 7 spec sweeps n)")
    figure = Figure("Fig 7", path, "")
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.6), sharex="col", gridspec_kw={"height_ratios": [3, 1.2]})
    (ax_r, ax_a), (err_r, err_a) = axes
    worst = {"R_r": 0.0, "R_a": 0.0}
    lo, hi = _span(groups, "n")
    dense = np.arange(lo, hi + 1)
    for g in groups:
        xs = [p["n"] for p in g.points]
        conf_r, fit_r, conf_a, fit_a = [], [], [], []
        for x in dense:
            mc, mf = model_line(base, g.overrides, [("n", int(x))], the_fit)
            conf_r.append(mc.R_r if mc else math.nan)
            fit_r.append(mf.R_r if mf else math.nan)
            conf_a.append(mc.R_a if mc else math.nan)
            fit_a.append(mf.R_a if mf else math.nan)
        for metric, ax, err_ax, conf, fitted in (("R_r", ax_r, err_r, conf_r, fit_r), ("R_a", ax_a, err_a, conf_a,
                                                                                    fit_a)):
            s = Series(metric, _n_label(g), _n_colour(g), g.design)
            figure.series.append(s)
            _errorbar(ax, s, xs, _bars(g.points, metric))
            _lines(ax, s, dense, conf, fitted)
            worst[metric] = max(worst[metric], _errors(err_ax, s, g, "n", metric))
    for ax in (ax_r, ax_a, err_r, err_a):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in (err_r, err_a):
        ax.set_xlabel("number of tasks n (t_m fixed) [tasks]")
    _error_axis(err_r, worst["R_r"])
    _error_axis(err_a, worst["R_a"])
    _value_axis(ax_r, "recovery ratio R_r = t_r / t_c", UNITS["R_r"])
    _value_axis(ax_a, "added time ratio R_a = t_c / t_m", UNITS["R_a"])
    ax_r.set_title("R_r against n", fontsize=10)
    ax_a.set_title("R_a against n", fontsize=10)
    for ax in (ax_r, ax_a):
        _legend(ax)
    fig.suptitle("Fig 7: recovery ratio and added time ratio against the number of tasks", fontsize=12)
    same = "; ".join(filter(None, (_coincide(figure.series, m) for m in ("R_r", "R_a"))))
    figure.caption = (f"R_r (left) and R_a (right) against n; {_named(figure.series, 'R_r')}; "
                      f"{_styles(figure.series)}. Below each, the models' error at the measured points, % of the "
                      "measured mean (filled: fitted, x: configured)." + (f" Note: {same}." if same else ""))
    _finish(fig, figure, _error_key(figure.series))
    return figure


def trial_cost(trials: pd.DataFrame, w: Weights, rule: str) -> pd.Series:
    """C(z) of each trial (trials.csv rows), its Q_r under `rule` (harness.analysis.qr)."""
    m = tables.numeric(trials, ["R_a_measured", "R_r_measured", "B_tot_measured", "instances_extra", "Q_r_compute"])
    terms: list[pd.Series] = [m["R_a_measured"], m["R_r_measured"], m["B_tot_measured"],
                              qr.q_r(rule, instances=m["instances_extra"], cpu=m["Q_r_compute"])]
    return model.cost(w, *terms)  # type: ignore[arg-type,return-value]  # element-wise, per trial


def _fig8_line(ax: Axes, g: Group, s: Series, base: Settings, the_fit: fit.Fit, w: Weights, rule: str,
               span: tuple[float, float], fitted_at: pd.Series) -> tuple[list[float], list[float]]:
    """The model's C along n for one group (fitted, configured) drawn; returns (n, fitted C) of the line."""
    xs = [p["n"] for p in g.points]
    dense = list(np.arange(span[0], span[1] + 1))
    zs = [line_z(base, g.overrides, [("n", int(x))]) for x in dense]
    lines = [model_line(base, g.overrides, [("n", int(x))], the_fit) for x in dense]
    conf = [model_cost(w, mc, rule) for mc, _ in lines]
    fitted = [model_cost(w, mf, rule, the_fit.q_r_compute(z) if z is not None else math.nan)
              for (_, mf), z in zip(lines, zs, strict=True)]
    if not any(math.isfinite(c) for c in fitted):  # no CPU fit: the fitted model at the measured n only
        dense, fitted = list(xs), [fitted_at.get(p["point"], math.nan) for p in g.points]
        conf = [math.nan] * len(xs)
    _lines(ax, s, dense, conf, fitted)
    return dense, fitted


def fig8(points: list[Row], trials: pd.DataFrame, record: SweepRecord, the_fit: fit.Fit, path: Path,
         weight_sets: list[tuple[str, Weights, str]], rule: str, include_saturated: bool = False) -> Figure:
    groups, base = _n_groups(points, record)
    if any(g.design == "centralised" and g.z["s_p"] == 1 for g in groups):  # the paper's Fig 8: s_p = 1
        groups = [g for g in groups if g.design != "centralised" or (g.z["s_p"] == 1 and g.mechanism != "restart")]
    if not groups:
        return Figure("Fig 8", None, "", "no points that differ in n only (the Fig 8 spec sweeps n)")
    figure = Figure("Fig 8", path, "")
    fig, axes = plt.subplots(1, len(weight_sets), figsize=(5 * len(weight_sets), 4.9), squeeze=False)
    span = _span(groups, "n")
    swept = list(record.get("swept") or [])
    said: list[str] = []
    for ax, (name, w, colour) in zip(axes[0], weight_sets, strict=True):
        measured = tables.over_repeats(trials.assign(C=trial_cost(trials, w, rule)), "point", ["C"])
        fitted_at = fit.cost_table(pd.DataFrame(points), w, swept, rule, include_saturated) \
            .set_index("point")["C_model_fitted"]
        panel: list[str] = []
        for g in groups:
            s = Series(name, g.design if g.design == "distributed" else _n_label(g), colour, g.design)
            figure.series.append(s)
            xs = [p["n"] for p in g.points]
            stats = [_interval(*measured.loc[p["point"], [f"C_{k}" for k in ("mean", "ci95_lo", "ci95_hi")]])
                     for p in g.points]
            _errorbar(ax, s, xs, stats)  # type: ignore[arg-type]
            dense, fitted = _fig8_line(ax, g, s, base, the_fit, w, rule, span, fitted_at)
            hot = [bool(p.get("saturated")) and not include_saturated for p in g.points]
            means = [math.nan if h else st[0] for st, h in zip(stats, hot, strict=True)]  # the optimum's candidates
            said_here = [s.label + ":"]
            if any(math.isfinite(m) for m in means):
                best = int(np.nanargmin(means))
                ax.plot([xs[best]], [means[best]], "o", markersize=15, markerfacecolor="none", color=colour,
                        alpha=0.6, zorder=4, gid=f"ring|{g.design}")
                said_here.append(f"measured optimum n = {xs[best]:g}")
            if any(math.isfinite(c) for c in fitted):
                at = int(np.nanargmin(fitted))
                ax.plot([dense[at]], [fitted[at]], "v", markersize=9, markerfacecolor="none", color="black",
                        zorder=5, gid=f"model-min|{g.design}")
                edge = " (at the edge of the measured range)" if dense[at] in (span[0], span[1]) else ""
                said_here.append(f"the fitted model's minimum at n = {dense[at]:g}"
                                 + ("" if dense[at] in xs else ", not measured") + edge)
            if any(hot):  # measured on a saturated host: crossed out, and no candidate for the optimum
                ax.plot([x for x, h in zip(xs, hot, strict=True) if h], [st[0] for st, h in zip(stats, hot, strict=True)
                        if h], "x", markersize=12, color="black", zorder=5, gid=f"saturated|{g.design}")
            panel.append(" ".join([said_here[0], ", ".join(said_here[1:])]))
        said.append(f"{name}: " + "; ".join(panel))
        ax.set_title(f"{name}\nalpha, beta, gamma, delta = {', '.join(f'{v:g}' for v in w)}", fontsize=9)
        ax.set_xlabel("number of tasks n (t_m fixed) [tasks]")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        _value_axis(ax, "cost C(z), Eq 10", UNITS["C"])
        _legend(ax)
    fig.suptitle(f"Fig 8: cost against n for {len(weight_sets)} weight set(s) (Q_r: {rule}, measured and model "
                 "alike)", fontsize=12)
    extra = []
    if any(d.startswith("ring|") for d in _gids(fig)):
        extra.append((Line2D([], [], marker="o", markersize=11, markerfacecolor="none", color="grey", linestyle="none",
                             label="measured optimum"), "ring"))
    if any(d.startswith("model-min|") for d in _gids(fig)):
        extra.append((Line2D([], [], marker="v", markersize=9, markerfacecolor="none", color="black", linestyle="none",
                             label="fitted model's minimum"), "model-min"))
    if any(d.startswith("saturated|") for d in _gids(fig)):
        extra.append((Line2D([], [], marker="x", color="black", linestyle="none", label="saturated host: left out"),
                      "saturated"))
    figure.caption = (f"C(z) against n for each weight set, Q_r by the `{rule}` rule (see Optimum); "
                      f"{_styles(figure.series)}. " + ". ".join(said) + "."
                      + (" The configured model has no C where delta > 0 (no CPU costs): its thin line is missing "
                         "there." if rule == "cpu" and not all(s.configured for s in figure.series) else ""))
    _finish(fig, figure, extra)
    return figure


def _gids(fig: Page) -> set[str]:
    return {str(a.get_gid()) for ax in fig.axes for a in ax.lines if a.get_gid()}
