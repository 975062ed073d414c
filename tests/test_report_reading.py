"""Reports and figures a reader cannot misread (issue 24), on hand-built sweep data: points.csv-like rows whose
model columns are the real model of each point's z, measured means a little off them, and a fit with CPU costs,
run through the real figure, optimum and report code.

What is held: every series a caption or key names is on the page (read from the matplotlib artists just before
saving); Fig 6 shows its B_tot gap at its own scale; report.md says nothing twice; an optimum line names only
swept design parameters and says what was measured and what was modelled, and when the model's optimum lies
outside the measured grid; a zero is not "falls short by about that much"; a fault off the worst moment says
so; a table is never cut when it is not on a terminal."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import model
from harness.analysis import figures, fit, optimum, report
from harness.cli import output
from harness.model import compute
from harness.plan import config

BASE = {"t_m": 5, "h_r": 2, "t_h_mult": 3, "s_p": 1, "s_o": 1, "fault": "slm-crash", "fault_at": "worst",
        "time_scale": 0.2, "requests": 6, "users": 2}
CPU = compute.CpuCosts(0.001, 0.0007, 0.0, 0.0)
AVAILABILITY = (1.0, 1.0, 0.0005, 0.005)
RECOVERY = (0.0, 1.0, 0.0, 0.0)
METRICS = ("t_c", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot")


def the_fit() -> fit.Fit:
    """A fit with no fitted timings (the model's fitted side is the configured one) and CPU costs, so Q_r in
    compute has a fitted model too."""
    return fit.Fit(families={}, params=[], per_task=[], notes=[], cpu_costs=CPU)


def sweep(overrides: list[dict[str, Any]], swept: list[str], repeats: int = 1, off: float = 0.004,
          b_off: float = -0.006) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(sweep.yaml's record, points.csv, trials.csv) of hand-made points: measured means `off` above the
    model (B_tot `b_off`), a 1% spread over `repeats` repeats."""
    record = {"spec": {"base": BASE, "description": "hand-made"}, "swept": swept, "repeat": repeats, "load": "builtin",
              "points": [{"id": f"p{i}", "overrides": o} for i, o in enumerate(overrides)],
              "machine": {"cpus": 2}, "sessions": [{"commit": "abc"}], "commit": "abc"}
    rows, trials = [], []
    f = the_fit()
    for i, o in enumerate(overrides):
        z = config.build(config.apply_overrides(BASE, list(o.items())))
        m = model.evaluate(z)
        row: dict[str, Any] = {"point": f"p{i}", "design": z.design, "mechanism": z.mechanism, "n": z.n, "h_r": z.h_r,
                               "t_h": z.t_h, "t_h_mult": round((z.t_h or 0) * z.h_r, 6), "s_p": z.s_p, "s_o": z.s_o,
                               "time_scale": z.time_scale, "fault": z.fault, "fault_at": z.fault_at,
                               "requests": z.requests, "repeats": repeats, "instances_extra": m.Q_r,
                               "host_busy": 0.2, "host_full": 0.0, "saturated": 0}
        q_cpu = f.q_r_compute(z)
        for metric in (*METRICS, "Q_r", "Q_r_compute"):
            value = q_cpu if metric == "Q_r_compute" else getattr(m, metric)
            mean = value * (1 + (b_off if metric == "B_tot" else off))
            half = 0.01 * abs(mean) if repeats > 1 else math.nan
            row |= {f"{metric}_mean": mean, f"{metric}_ci95_lo": mean - half, f"{metric}_ci95_hi": mean + half,
                    f"{metric}_fitted": value, f"{metric}_model": math.nan if metric == "Q_r_compute" else value}
        rows.append(row)
        for k in range(repeats):
            spread = 1 + 0.005 * (k - (repeats - 1) / 2)
            trials.append({"point": f"p{i}", "trial": f"p{i}-r{k + 1}", "repeat": k + 1, "saturated": False,
                           "instances_extra": m.Q_r, "Q_r_compute": row["Q_r_compute_mean"] * spread,
                           **{f"{x}_measured": row[f"{x}_mean"] * spread for x in ("R_a", "R_r", "B_tot")},
                           "lost": 0, "duplicated": 0, "completed": 6, "requests": 6, "trial_seconds": 10.0,
                           "link_backend": "proxy", "host_load": 0.5, "host_busy": 0.2, "host_full": 0.0})
    return record, pd.DataFrame(rows), pd.DataFrame(trials)


def check_page(figure: figures.Figure) -> None:
    """Everything the key, the legends and the caption name is on the page."""
    assert figure.path is not None and figure.path.read_bytes()[:4] == b"\x89PNG"
    for label, kind in figure.key:  # a kind is drawn when some artist carries it (`fitted|centralised`, ...)
        if kind.startswith("design|"):
            assert any(d.endswith("|" + kind.split("|")[1]) for d in figure.drawn), (label, figure.drawn)
        else:
            assert any(d.split("|")[0] == kind for d in figure.drawn), (label, figure.drawn)
    assert set(figure.legends) <= figure.labels, (figure.legends, figure.labels)
    for word in figures.COLOUR_WORDS.values():  # a colour the caption names is a colour on the page
        if re.search(rf"\b{word}\b", figure.caption):
            assert word in figure.colours, (word, figure.caption, figure.colours)
    for design in ("centralised", "distributed"):
        if design in figure.caption or design in [label for label, _ in figure.key]:
            assert any(d.endswith("|" + design) for d in figure.drawn), design


# --- figures -------------------------------------------------------------------------------------------------


def test_fig6_names_only_the_series_it_draws(tmp_path):
    record, points, _ = sweep([{"h_r": h} for h in (0.25, 1, 4)], ["h_r"])
    figure = figures.fig6(points.to_dict("records"), record, the_fit(), tmp_path / "fig6.png")
    check_page(figure)
    text = " ".join([figure.caption, *(label for label, _ in figure.key), *figure.legends])
    assert "5/h_r" not in text and "distributed" not in text and not re.search(r"\bred\b", figure.caption)
    assert "yellow: t_h = 3/h_r" in figure.caption and "centralised, t_h = 3/h_r" in figure.legends
    assert "no interval" in figure.caption  # one repeat: no bar is drawn, and the key says so
    # the same code names the second multiple and the other design where they are drawn
    record, points, _ = sweep([{"h_r": h, "t_h_mult": m, "design": d} for h in (0.25, 1, 4) for m in (3, 5)
                               for d in ("centralised", "distributed")], ["h_r", "t_h_mult", "design"], repeats=2)
    both = figures.fig6(points.to_dict("records"), record, the_fit(), tmp_path / "fig6b.png")
    check_page(both)
    assert "yellow: t_h = 3/h_r; red: t_h = 5/h_r" in both.caption and "dashed lines distributed" in both.caption
    assert {"centralised, t_h = 5/h_r", "distributed, t_h = 3/h_r"} <= set(both.legends)
    assert "95% interval" in both.caption and ("distributed", "design|distributed") in both.key


def test_fig6_shows_a_sub_percent_gap_at_its_own_scale(tmp_path):
    record, points, _ = sweep([{"h_r": h} for h in (0.25, 1, 4)], ["h_r"], b_off=-0.006)
    figure = figures.fig6(points.to_dict("records"), record, the_fit(), tmp_path / "fig6.png")
    b_value = next(label for label, _ in figure.ylims if label.startswith("B_tot [kB/s]"))
    assert "not 0: spans" in b_value  # the value axis does not start at zero and says how much it spans
    spans = re.search(r"spans ([\d.]+)% of its top", b_value)
    assert spans and float(spans[1]) < 5
    errors = [lims for label, lims in figure.ylims if label.startswith("model - measured")]
    assert len(errors) == 2 and all(lo <= -5 and hi >= 5 for lo, hi in errors)  # at least +-5%: 0.6% is small
    assert "error of the fitted model, %" in [label for label, _ in figure.key]
    assert any(d.startswith("error-fitted|") for d in figure.drawn)


def test_fig7_caption_names_the_colours_drawn_and_lines_that_hide_each_other(tmp_path):
    record, points, _ = sweep([{"s_p": 1, "s_o": 1, "n": 2}, {"s_p": 1, "s_o": 1, "n": 6},
                               {"s_p": 3, "s_o": 3, "n": 6}], ["s_p", "s_o", "n"])
    figure = figures.fig7(points.to_dict("records"), record, the_fit(), tmp_path / "fig7.png")
    check_page(figure)
    assert "yellow: centralised, s_p = 1" in figure.caption and "red: centralised, s_p = 3" in figure.caption
    assert not re.search(r"\b(blue|green)\b", figure.caption) and "distributed" not in figure.caption
    assert "the yellow and red model lines of R_a coincide" in figure.caption  # R_a does not depend on s_p
    assert "R_r" not in figure.caption.split("Note:")[1]  # their R_r lines differ: no such note


def test_fig8_marks_the_models_minimum_and_says_it_was_not_measured(tmp_path):
    record, points, trials = sweep([{"design": d, "n": n} for d in ("centralised", "distributed") for n in (2, 6)],
                                   ["design", "n"])
    sets = [("availability and recovery", AVAILABILITY, "tab:green"), ("recovery only", RECOVERY, "tab:red")]
    figure = figures.fig8(points.to_dict("records"), trials, record, the_fit(), tmp_path / "fig8.png", sets, "cpu")
    check_page(figure)
    assert ("fitted model's minimum", "model-min") in figure.key and ("measured optimum", "ring") in figure.key
    minima = re.findall(r"the fitted model's minimum at n = (\d+)(, not measured)?", figure.caption)
    assert minima and any(n not in ("2", "6") and unmeasured for n, unmeasured in minima), figure.caption
    assert all(bool(unmeasured) == (n not in ("2", "6")) for n, unmeasured in minima)
    assert "Q_r = cpu for both costs" not in figure.caption  # the rule is explained once, under Optimum


# --- optimum lines -----------------------------------------------------------------------------------------------


def fig7_like() -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """A Fig 7 sweep: s_p and s_o vary with n, and a calibration point at another time scale and request count
    (so `requests` and `time_scale` are swept keys, and no design choice)."""
    return sweep([{"s_p": 1, "s_o": 1, "n": 2}, {"s_p": 1, "s_o": 1, "n": 6}, {"s_p": 3, "s_o": 3, "n": 6},
                  {"s_p": 1, "s_o": 1, "n": 6, "time_scale": 0.6, "requests": 4}],
                 ["s_p", "s_o", "n", "time_scale", "requests"], repeats=2)


def test_optimum_lines_name_only_swept_design_parameters_and_say_measured_and_modelled():
    record, points, trials = fig7_like()
    grid = optimum.ModelGrid(points, record, the_fit())
    rows = optimum.cost_table(points, AVAILABILITY, record["swept"], "cpu", trials=trials)
    assert [c for c in rows.columns if c in ("requests", "time_scale")] == []
    assert list(rows.columns[:6]) == ["rank", "design", "mechanism", "s_p", "s_o", "n"]
    lines = optimum.optimum_lines(rows, grid, AVAILABILITY, "cpu")
    assert lines and all("requests" not in line and "time_scale" not in line for line in lines)
    for line in lines:
        assert "measured best " in line and "95% interval" in line  # what was measured, with its interval
        assert "the fitted model's best measured point: " in line  # the model among the measured points
        assert "the fitted model's minimum over s_p = 1..3, s_o = 1..3, n = 2..6: " in line  # and between them
    # availability and recovery: the model's minimum lies at an n between the measured ones
    assert "n=4" in lines[0] or "n=3" in lines[0] or "n=5" in lines[0]
    assert "which was not measured" in lines[0], lines[0]


def test_an_optimum_beyond_the_measured_range_is_stated():
    record, points, trials = fig7_like()
    grid = optimum.ModelGrid(points, record, the_fit())
    rows = optimum.cost_table(points, RECOVERY, record["swept"], "cpu", trials=trials)
    (line,) = optimum.optimum_lines(rows, grid, RECOVERY, "cpu")  # one design: no second, overall line
    assert "a measured point" in line  # n = 6, the largest measured, is the model's best inside the range
    assert "its C still falls beyond the measured range (s_p=1, s_o=1, n=7" in line
    assert line.endswith("the model's optimum lies outside the measured grid") or \
        "the model's optimum lies outside the measured grid;" in line
    no_grid = optimum.optimum_lines(rows)  # points alone: nothing said about the model between the points
    assert all("minimum over" not in x for x in no_grid)


# --- report.md -----------------------------------------------------------------------------------------------------


def hand_made_result(points: pd.DataFrame, trials: pd.DataFrame, crash_after: float) -> fit.FitResult:
    f = the_fit()
    f.params = [fit.Param("fault.crash_after_heartbeat", crash_after, 0.0, 0.0, "s", 3),
                fit.Param("fault.late_by", 0.03, 0.001, 0.0, "s", 3)]
    params = pd.DataFrame([p.row() for p in f.params])
    return fit.FitResult(f, params, fit.error_table(points), points, trials, [])


def write_report(tmp_path: Path, record: dict[str, Any], points: pd.DataFrame, trials: pd.DataFrame,
                 crash_after: float = 0.0) -> str:
    result = hand_made_result(points, trials, crash_after)
    ts = optimum.primary_scale(points)
    primary = points[points["time_scale"] == ts].to_dict("records")
    sets = report.DEFAULT_WEIGHTS
    figs = [figures.fig6(primary, record, result.fit, tmp_path / "fig6.png"),
            figures.fig7(primary, record, result.fit, tmp_path / "fig7.png"),
            figures.fig8(primary, trials, record, result.fit, tmp_path / "fig8.png", sets, "cpu")]
    grid = optimum.ModelGrid(points, record, result.fit)
    lines: list[str] = []
    for name, w, _ in sets:
        rows = optimum.cost_table(points, w, record["swept"], "cpu", trials=trials)
        lines += [f"**{name}**:", "", *(f"- {x}" for x in optimum.optimum_lines(rows, grid, w, "cpu")), ""]
    return report._markdown(tmp_path, record, result, figs, lines, ts, "cpu")


def paragraphs(md: str) -> list[str]:
    return [p.strip() for p in md.split("\n\n") if len(p.strip()) > 60 and not p.strip().startswith("|")]


def test_report_md_says_each_thing_once_and_a_zero_as_zero(tmp_path):
    record, points, trials = fig7_like()
    md = write_report(tmp_path, record, points, trials, crash_after=0.0)
    said = paragraphs(md)
    repeated = {p for p in said if said.count(p) > 1}
    assert not repeated, repeated
    assert md.count("Q_r = cpu for both costs") == 1  # the rule's long paragraph, once
    assert "falls short" not in md and "0 s on average, paper), as the model assumes" in md
    assert "requests=" not in md and "time_scale=" not in md
    assert "fault.late_by" in md and "early_by" not in md
    shorter = write_report(tmp_path, record, points, trials, crash_after=0.08)
    assert "falls short of the model by about 0.08 s" in shorter  # a real gap is said, with its unit


def test_report_md_flags_a_large_error_after_fitting_and_a_fault_off_the_worst_moment(tmp_path):
    record, points, trials = fig7_like()
    points.loc[0, "Q_r_compute_mean"] *= 1.25  # the fitted model misses Q_r_compute by 20% at one point
    points.loc[1, "fault_at"] = "task:3"  # a partition after task 3: the model's t_r bounds it
    md = write_report(tmp_path, record, points, trials)
    (row,) = [line for line in md.splitlines() if line.startswith("| Q_r_compute |")]
    assert row.endswith("| **large** |") and "Flagged: Q_r_compute (" in md
    assert row.startswith("| Q_r_compute | monolith-equiv. | 4 | - | - |")  # 4 measured, no configured model
    (t_c,) = [line for line in md.splitlines() if line.startswith("| t_c |")]
    assert not t_c.endswith("**large** |")
    assert "1 point(s) come from a fault that was not aimed at the worst moment: p1 (task:3)" in md
    assert "| t_r meas [s] | fault at |" in md and "| task:3 |" in md  # beside t_r in the points table


# --- tables off a terminal ----------------------------------------------------------------------------------------


def test_a_wide_table_is_narrowed_never_cut_and_points_to_every_column():
    rows = [{"rank": 1, "design": "centralised", "mechanism": "state-sharing", "n": 6, "C_measured": 2.75,
             "C_model_fitted": 2.76, **{f"a_long_column_name_{i}": float(i) for i in range(12)},
             "note": "a long explanation that wraps over several lines rather than being cut at the edge " * 2}]
    text = output.render(rows, "table", title="t", width=80, csv_path="DIR/optimise.csv")
    assert "…" not in text and "..." not in text
    head = text.split("(")[0]
    shown = [c for c in rows[0] if re.search(rf"\b{re.escape(c)}\b", head)]
    assert shown[:4] == ["rank", "design", "mechanism", "n"]
    (note,) = re.findall(r"\((\d+) more column\(s\) not shown at 80 characters: ([^;]+); every column: "
                         r"DIR/optimise.csv\)", text)
    assert int(note[0]) == len(rows[0]) - len(shown) and note[1].split(", ") == [c for c in rows[0] if c not in shown]
    assert max(len(line) for line in text.splitlines()[:-1]) <= 80
    wide = output.render(rows[:1], "table", width=1000)
    assert "not shown" not in wide and all(c in wide for c in rows[0])
    words = output.render([{"k": "x", "note": rows[0]["note"]}], "table", width=60)
    assert all(w in words for w in rows[0]["note"].split())  # a long text wraps, every word kept


@pytest.mark.parametrize("columns", [5, 40])
def test_a_column_name_is_never_cut(columns):
    rows = [{f"mechanism_{i}": "state-sharing" for i in range(columns)}]
    text = output.render(rows, "table", width=60)
    for line in text.splitlines():
        for name in re.findall(r"mechanism\w*", line):
            assert re.fullmatch(r"mechanism_\d+", name), line


def test_report_md_sums_the_safety_anomalies_only_where_a_history_shows_them(tmp_path):
    """Issue 22's anomalies in the report's totals: summed over the trials that measured them; n/a, not 0,
    where no trial could (black-box targets); the share said where only some could."""
    record, points, trials = fig7_like()
    md = write_report(tmp_path, record, points, trials)
    assert "concurrent owners and double effects n/a" in md  # trials.csv of a sweep before the columns
    trials = trials.assign(concurrent_owners=[2] + [0] * (len(trials) - 1), double_effects=8)
    md = write_report(tmp_path, record, points, trials)
    assert "2 driven by two owners at once (concurrent_owners), " in md
    assert f"{8 * len(trials)} task effects applied twice in one epoch (double_effects)." in md
    trials = trials.assign(concurrent_owners=["n/a"] + [1] * (len(trials) - 1))
    md = write_report(tmp_path, record, points, trials)
    assert f"{len(trials) - 1} driven by two owners" in md
    assert f"(in the {len(trials) - 1} of {len(trials)} trials whose history shows it)" in md
