"""The cost of every class of crash points (a sweep with `fault_at: every`), read back from the sweep folder:
per explored point, what each class of crash points cost (the target request's t_r - t_c), the empirical worst
case beside the model's under both readings of Eq 3, and which reading the data supports.

The classes, the runs used and the runs an exhaustive search would need come from sweep.yaml's `exploration`
(faults/explore.py made them); the measured lost time of a trial is the target request's
`lost_time` in its affected.csv (paper seconds), 0 when the crash did not touch the target (it had completed),
and infinite when the target never completed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TypedDict

import pandas as pd

from faults import explore
from harness import model
from harness.analysis import tables
from harness.analysis.sweep_folder import Exploration, Settings, SweepRecord
from harness.errors import ConfigError
from harness.history.reading import read_history
from harness.plan import config

BAND = (-0.05, 0.05)  # how near the corrected reading must come to the empirical worst to be "supported"


class Verdict(TypedDict, total=False):
    """The empirical worst case of an exploration beside the model's t_l under both readings of Eq 3 (empty:
    nothing to judge)."""

    worst_point: str  # the crash point (`task:K@F`) that cost the most, measured
    worst: float  # its lost time, paper seconds
    corrected: float  # the model's t_l, corrected reading
    literal: float  # the model's t_l, literal reading
    error_corrected: float  # worst / corrected - 1
    error_literal: float
    nearer: str  # the reading nearer the empirical worst
    same_point: bool  # the model's worst crash point is the measured one
    predicted_point: str
    within_band: bool  # the corrected reading within BAND of the empirical worst


def target_lost_time(trial_dir: Path) -> float:
    """t_r - t_c of the request the crash aimed at (paper seconds), from the trial's own files."""
    events = read_history(trial_dir / "events.jsonl").events
    kill = next((e for e in events if e["kind"] == "fault" and e.get("action") == "kill"), None)
    if kill is None or not kill.get("req"):
        return math.nan
    affected = tables.read_csv(trial_dir / "affected.csv")
    row = affected[affected["req"] == kill["req"]] if "req" in affected else affected
    if row.empty:
        return 0.0
    value = float(row["lost_time"].iloc[0])
    return value if math.isfinite(value) else math.inf


def _z(base: Settings, overrides: Settings) -> config.Experiment | None:
    try:
        return config.build(config.apply_overrides(base, list(overrides.items())))
    except ConfigError:
        return None


def tables_of(out: Path, record: SweepRecord) -> list[tuple[Exploration, pd.DataFrame]]:
    """Per exploration of sweep.yaml: its record and one row per class (measured over the finished trials)."""
    base = (record.get("spec") or {}).get("base") or {}
    ids = {json.dumps(p.get("overrides", {}), sort_keys=True, default=str): p["id"] for p in record.get("points", [])}
    done = tables.read_csv(Path(out) / "trials.csv", text=True)
    found = []
    for entry in record.get("exploration") or []:
        rows = []
        for members in entry["classes"]:
            over = {**entry["overrides"], "fault_at": members[0]}
            z = _z(base, over)
            pid = ids.get(json.dumps(over, sort_keys=True, default=str))
            if z is None or pid is None:
                continue
            point = explore.CrashPoint(z.fault_task or 0, z.fault_phase or 0.0,
                                       explore.lost_tasks(model, z, z.fault_task or 0, z.fault_phase or 0.0))
            trials = list(done[done["point"] == pid]["trial"]) if "point" in done else []
            lost = [target_lost_time(Path(out) / "trials" / t) for t in trials]
            false = tables.numeric(done[done["point"] == pid], ["false_suspicions"])["false_suspicions"].sum()
            stats = tables.over_repeats(pd.DataFrame({"p": [pid] * len(lost), "x": lost}), "p", ["x"]) \
                if lost else None
            rows.append({"crash point": members[0], "class": " ".join(members), "lost tasks":
                         "completed" if point.lost is None else ",".join(map(str, point.lost)) or "none",
                         "runs": len(lost), "measured": stats["x_mean"].iloc[0] if stats is not None else math.nan,
                         "ci95_lo": stats["x_ci95_lo"].iloc[0] if stats is not None else math.nan,
                         "ci95_hi": stats["x_ci95_hi"].iloc[0] if stats is not None else math.nan,
                         "corrected": explore.predicted_lost_time(model, z, point), "false suspicions": int(false)})
        found.append((entry, pd.DataFrame(rows)))
    return found


def verdict(entry: Exploration, frame: pd.DataFrame, base: Settings) -> Verdict:
    """The empirical worst case beside the model's t_l under both readings, and which reading is nearer."""
    z = _z(base, {**entry["overrides"], "fault_at": "worst"})
    measured = frame.dropna(subset=["measured"])
    measured = measured[measured["false suspicions"] == 0]  # a starved detector's figure says nothing here
    if z is None or measured.empty:
        return {}
    worst = measured.iloc[int(measured["measured"].to_numpy().argmax())]
    readings = {r: model.evaluate(z.model_copy(update={"model_reading": r})).t_l for r in ("corrected", "literal")}
    errors = {r: worst["measured"] / v - 1 for r, v in readings.items()}
    nearer = min(errors, key=lambda r: abs(errors[r]))
    predicted_worst = frame["crash point"].iloc[int(frame["corrected"].to_numpy().argmax())]
    return {"worst_point": worst["crash point"], "worst": float(worst["measured"]),
            "corrected": readings["corrected"], "literal": readings["literal"],
            "error_corrected": errors["corrected"], "error_literal": errors["literal"], "nearer": nearer,
            "same_point": worst["crash point"] == predicted_worst, "predicted_point": predicted_worst,
            "within_band": BAND[0] <= errors["corrected"] <= BAND[1]}


def lines(out: Path, record: SweepRecord) -> list[str]:
    """report.md's section on the exploration, or nothing when the sweep explored nothing."""
    found = tables_of(out, record)
    if not found:
        return []
    base = (record.get("spec") or {}).get("base") or {}
    md = ["## Exploration of every crash point", "",
          "Each crash point (K, F): the driver's heartbeat at the end of task K of the target request, the SIGKILL "
          "F heartbeat intervals later (`fault_at task:K@F`); points that lose tasks of the same parameters at the "
          "same phase form a class, run once (faults/explore.py). Lost time is the target's t_r - t_c "
          "(paper seconds); `corrected` is the model's corrected reading of Eq 3 at that point. Classes whose trials "
          "saw false suspicions (a detector starved of CPU) are shown but left out of the worst case.", ""]
    for entry, frame in found:
        desc = ", ".join(f"{k}={v}" for k, v in entry["overrides"].items()) or "the base"
        md += [f"### {entry['design']} ({desc})", "",
               f"- Runs: {entry['runs']} classes x {record.get('repeat', 1)} repeat(s) = "
               f"{entry['runs'] * int(record.get('repeat', 1))} trials, against {entry['exhaustive_runs']} for an "
               f"exhaustive search (every boundary x {len(entry['phases'])} phases x every instance that could "
               "drive it), one repeat each."]
        v = verdict(entry, frame, base)
        if v:
            supported = "corrected" if v["nearer"] == "corrected" else "literal"
            agree = math.isclose(v["corrected"], v["literal"])
            md += [f"- Empirical worst case: {v['worst']:.4g} s at {v['worst_point']}; the model's worst "
                   f"(corrected t_l) {v['corrected']:.4g} s at {v['predicted_point']} "
                   f"({100 * v['error_corrected']:+.1f}%), literal t_l {v['literal']:.4g} s "
                   f"({100 * v['error_literal']:+.1f}%).",
                   "- Both readings give the same t_l here: the data cannot tell them apart." if agree else
                   f"- The data supports the **{supported}** reading of Eq 3"
                   + (" (same worst crash point, within the band)" if supported == "corrected" and v["same_point"]
                      and v["within_band"] else "") + "."]
        md += ["", tables.markdown(frame, digits=4), ""]
    return md
