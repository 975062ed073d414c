"""The analysis tables as pandas frames: read a CSV the harness wrote, aggregate over repeats, write.

One place for the conventions every table shares: a torn last line (a writer killed mid-row) is not a row,
NaN is written as `nan` (as summary.csv writes it), and the statistics over the repeats of a point are the
same everywhere: mean, min, max, sample std and Student's t 95% interval of the mean (NaN below 2 values).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.history.guarded import guard, read_text

STATS = ("mean", "min", "max", "std", "ci95_lo", "ci95_hi")

Row = dict[str, Any]
"""One row of a table as pandas gives it (`DataFrame.to_dict("records")`): column -> cell. A cell is a float, an
int, a bool or a str (NaN where empty) by column, and the columns are named at run time (`<metric>_mean`, ...),
so the cell's type is left open here, once, for every reader of rows."""


def read_csv(path: Path, *, text: bool = False) -> pd.DataFrame:
    """The complete rows of a CSV file (none if it is absent); `text` keeps every cell as written (a row is
    appended elsewhere exactly as read), otherwise numbers are parsed and empty or `nan` cells are NaN."""
    if not path.exists():
        return pd.DataFrame()
    raw = read_text(path)  # one line naming the file if it is not text
    raw = raw[: raw.rfind("\n") + 1]  # a torn last line is no row
    if not raw.strip():
        return pd.DataFrame()
    options = {"dtype": str, "keep_default_na": False} if text else {}
    with guard(path, "not CSV"):
        return pd.read_csv(io.StringIO(raw), on_bad_lines="skip", **options)  # type: ignore[call-overload]


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False, na_rep="nan")


def csv_line(row: dict[str, object], columns: list[str]) -> str:
    """One row as a CSV line in `columns`' order (a key not in them is left out, a missing one is NaN)."""
    return pd.DataFrame([row]).reindex(columns=columns).to_csv(header=False, index=False, na_rep="nan")


def numeric(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns as floats, a missing column or a cell that is no number NaN, infinities NaN."""
    out = pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce") if c in frame else np.nan for c in columns},
                       index=frame.index)
    return out.replace([np.inf, -np.inf], np.nan).astype(float)


def over_repeats(frame: pd.DataFrame, by: str, columns: list[str]) -> pd.DataFrame:
    """Per value of `by` (first-seen order): `<column>_<stat>` for each column and each of STATS. The 95%
    interval is mean +- t(0.975, n - 1) std / sqrt(n) over the n finite values, NaN for n < 2."""
    from scipy import stats  # 0.6 s to import: only where an interval is computed

    values = numeric(frame, columns)
    values[by] = frame[by]
    agg = values.groupby(by, sort=False)[columns].agg(["mean", "min", "max", "std", "count"])
    out: dict[str, pd.Series] = {}
    for c in columns:
        s = agg[c]
        half = stats.t.ppf(0.975, s["count"] - 1) * s["std"] / np.sqrt(s["count"])
        out |= {f"{c}_mean": s["mean"], f"{c}_min": s["min"], f"{c}_max": s["max"], f"{c}_std": s["std"],
                f"{c}_ci95_lo": s["mean"] - half, f"{c}_ci95_hi": s["mean"] + half}
    return pd.DataFrame(out)


def outside_interval(points: pd.DataFrame, metrics: tuple[str, ...], model: str = "fitted") -> pd.DataFrame:
    """The (point, metric) pairs of points.csv where `<metric>_<model>` lies outside the measured 95% interval
    of the mean (`_ci95_lo` .. `_ci95_hi`); pairs without an interval (one repeat) are not judged. Columns:
    point, metric, mean, ci95_lo, ci95_hi, model, off (model minus the nearer end, relative to the mean)."""
    rows = []
    for m in metrics:
        cols = [f"{m}_mean", f"{m}_ci95_lo", f"{m}_ci95_hi", f"{m}_{model}"]
        if not set(cols) <= set(points.columns):
            continue
        v = numeric(points, cols)
        mean, lo, hi, mod = (v[c] for c in cols)
        out = (mod < lo) | (mod > hi)
        nearer = lo.where(mod < lo, hi)
        for i in points.index[out.fillna(False)]:
            rows.append({"point": points.at[i, "point"], "metric": m, "mean": mean[i], "ci95_lo": lo[i],
                         "ci95_hi": hi[i], "model": mod[i], "off": (mod[i] - nearer[i]) / abs(mean[i])})
    return pd.DataFrame(rows, columns=["point", "metric", "mean", "ci95_lo", "ci95_hi", "model", "off"])


def markdown(frame: pd.DataFrame, columns: list[str] | None = None, digits: int = 4) -> str:
    """A GitHub table (report.md): floats to `digits` significant figures, NaN as '-'."""
    if frame.empty:
        return "(none)\n"
    frame = frame[columns or list(frame.columns)]

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if not np.isfinite(v) else f"{v:.{digits}g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "|".join("---" for _ in frame.columns) + "|\n"
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n"
                          for row in frame.itertuples(index=False, name=None))
