"""Statistics in the report (issue 13): the points where the model lies outside the measured 95% interval are
found and listed, a point of one repeat is not judged, and the figures' bars are the interval, not min-max."""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis import figures, report, tables


def points(**cols: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"point": ["a", "b", "c"], **cols})


def test_the_model_outside_the_interval_is_flagged_and_inside_or_unjudged_is_not():
    p = points(R_r_mean=[1.5, 1.5, 1.5], R_r_ci95_lo=[1.4, 1.4, math.nan], R_r_ci95_hi=[1.6, 1.6, math.nan],
               R_r_fitted=[1.55, 1.8, 9.0], R_r_model=[1.3, 1.5, 9.0])
    fitted = tables.outside_interval(p, ("R_r", "t_c"), "fitted")
    assert list(fitted["point"]) == ["b"] and fitted["off"].iloc[0] == (1.8 - 1.6) / 1.5
    configured = tables.outside_interval(p, ("R_r",), "model")
    assert list(configured["point"]) == ["a"] and configured["off"].iloc[0] < 0


def test_the_report_lists_the_flags_and_says_when_nothing_can_be_judged():
    p = points(**{f"{m}_{s}": v for m in report.FLAGGED for s, v in
                  (("mean", [2.0] * 3), ("ci95_lo", [1.9, 1.9, math.nan]), ("ci95_hi", [2.1, 2.1, math.nan]),
                   ("fitted", [2.0, 2.5, 2.0]), ("model", [2.0, 2.0, 2.0]))})
    text = "\n".join(report._outside_lines(p))
    n = len(report.FLAGGED)  # Q_r_compute among them: flagged like the others (issue 24)
    assert f"**fitted model**: {n} of {2 * n} (point, metric) pairs outside:" in text and "| b | R_r | ratio |" in text
    assert "| b | Q_r_compute | monolith-equiv. |" in text and "| b | t_c | s |" in text  # a unit on every row
    assert f"**configured model**: 0 of {2 * n} (point, metric) pairs outside." in text
    one = p.assign(**{f"{m}_ci95_{e}": math.nan for m in report.FLAGGED for e in ("lo", "hi")})
    assert "no interval to judge" in "\n".join(report._outside_lines(one))


def test_the_bars_are_the_95_percent_interval():
    row = {"R_r_mean": 2.0, "R_r_min": 1.0, "R_r_max": 3.0, "R_r_ci95_lo": 1.8, "R_r_ci95_hi": 2.3}
    assert figures._bars([row], "R_r") == [(2.0, 1.8, 2.3)]
    assert figures._bars([{**row, "R_r_ci95_lo": math.nan}], "R_r") == [(2.0, 2.0, 2.0)]
