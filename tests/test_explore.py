"""The exploration of every crash point (issue 13): `fault_at: every` in a sweep runs one trial per class of
crash points that cost the same, and on a small z where the two readings of Eq 3 disagree (n = 3, shares after
task 1 only: corrected loses tasks 2-3, literal all three) the empirical worst case is the corrected reading's,
at its crash point. Also the classes themselves, which need no run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from faults import explore
from harness import model
from harness.analysis import crash_costs as analysis
from harness.analysis.sweep_folder import read_record
from harness.errors import UserError
from harness.experiment import sweep
from harness.plan import config

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"design": "centralised", "n": 3, "t_i": 1.0, "h_r": 2, "time_scale": 0.2, "s_p": 2, "s_o": 1,
         "fault": "slm-crash", "fault_at": "every", "requests": 3, "users": 1, "warmup": 2, "s_z": 20, "P_a": 10,
         "P_b": 10, "seed": 13}


def run_spec(spec: dict, tmp_path: Path, timeout: float) -> Path:
    """`harness sweep` of a spec written to tmp_path; the sweep folder, once it finished without a failure."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "harness", "sweep", str(path), "--out", str(out), "--load",
                           "builtin"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_crash_points_that_lose_the_same_work_at_the_same_phase_are_one_class():
    z = config.build({**SMALL, "n": 6, "s_p": 2, "s_o": 2})
    found = explore.classes(model, z)
    assert explore.exhaustive_runs(z) == 6 * 4 * 2 and len(found) == 11
    first = {c[0].fault_at: [p.fault_at for p in c] for c in found}
    assert first["task:1@0"] == ["task:1@0", "task:3@0", "task:5@0"]  # one task lost after each share point
    assert first["task:2@0"] == ["task:2@0", "task:4@0", "task:6@0"]  # the whole run of two: the worst
    assert first["task:2@0.5"] == ["task:2@0.5", "task:4@0.5"]  # the share got out: nothing redone
    assert explore.lost_tasks(model, z, 6, 0.5) is None  # after the completion went out
    worst = max((c[0] for c in found), key=lambda p: explore.predicted_lost_time(model, z, p))
    assert worst.fault_at == "task:2@0"
    assert explore.predicted_lost_time(model, z, worst) == pytest.approx(model.evaluate(z).t_l)
    dist = config.build({**SMALL, "design": "distributed", "n": 6})
    assert len(explore.classes(model, dist)) == 1 + 2 * 3  # every task alike: one class per phase, and the completion


def test_a_bad_phase_list_and_every_outside_a_sweep_are_refused(tmp_path):
    with pytest.raises(UserError, match="phases: expected a list of distinct numbers"):
        sweep.plan({"base": SMALL, "phases": [0, 1]})
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--fault", "slm-crash", "--fault-at", "every",
                           "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "fault_at: every explores every crash point" in proc.stderr


@pytest.mark.slow
def test_an_exploration_finds_the_corrected_readings_worst_case(tmp_path):
    out = run_spec({"description": "exploration test", "base": SMALL, "phases": [0, 0.5]}, tmp_path, 240)
    record = read_record(out)
    (entry,) = record["exploration"]
    assert (entry["runs"], entry["exhaustive_runs"]) == (5, 12)
    ((_, frame),) = analysis.tables_of(out, record)
    assert list(frame["runs"]) == [1] * 5
    v = analysis.verdict(entry, frame, SMALL)
    z = config.build({**SMALL, "fault_at": "worst"})
    assert v["corrected"] == pytest.approx(model.evaluate(z).t_l)
    assert v["worst_point"] == v["predicted_point"] == "task:3@0", frame.to_string()
    assert v["nearer"] == "corrected" and abs(v["error_corrected"]) < 0.1, v
    completed = frame[frame["lost tasks"] == "completed"]["measured"]
    assert (completed == 0).all(), frame.to_string()  # after the completion went out the target lost nothing
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "## Exploration of every crash point" in text and "supports the **corrected** reading" in text
