"""Sweeps on every runtime (issue 13): experiments/fig7-ci.yaml as a sweep on the docker runtime, with the same
files as on the local one. The runtime is a key of the spec like any other (`base: {runtime: docker}`), so the
test runs the shipped spec with only that key added."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.experiment import sweep
from harness.runtime import image
from tests.test_explore import run_spec

ROOT = Path(__file__).resolve().parents[1]
docker_ok, docker_why = image.available()

pytestmark = [pytest.mark.docker, pytest.mark.slow,
              pytest.mark.skipif(not docker_ok, reason=f"no Docker here: {docker_why}")]

TRIAL_FILES = {"config.yaml", "events.jsonl", "requests.csv", "links.csv", "cpu.csv", "summary.csv", "trial.log"}


def test_fig7_ci_runs_as_a_sweep_on_docker(tmp_path):
    spec = yaml.safe_load((ROOT / "experiments" / "fig7-ci.yaml").read_text())
    spec["base"]["runtime"] = "docker"
    out = run_spec(spec, tmp_path, 600)
    rows = sweep.read_rows(out / "trials.csv")
    assert len(rows) == len(sweep.plan(spec).trials) == 4
    assert {r["runtime"] for r in rows} == {"docker"}
    assert all(r["lost"] == "0" and r["verdict"] == "pass" and float(r["R_r_measured"]) > 1 for r in rows), rows
    for r in rows:
        folder = out / "trials" / r["trial"]
        assert {p.name for p in folder.iterdir()} >= TRIAL_FILES
        assert yaml.safe_load((folder / "config.yaml").read_text())["runtime"] == "docker"
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (out / "fig7.png").exists()
