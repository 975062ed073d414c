"""`harness run` end to end, as a user runs it: a real subprocess, real services, proxies and faults."""

from __future__ import annotations

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import history
from harness.measure.summary import SUMMARY_COLUMNS
from harness.runtime import leftovers
from protocol.events import KINDS
from tests.helpers import assert_reanalysis_reproduces

pytestmark = pytest.mark.slow

FAST = ("--set", "n=4", "--set", "t_i=2", "--requests", "6", "--users", "3")
LOAD = os.environ.get("MANOBENCH_TEST_LOAD", "locust")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """One folder for every run of this module, so the monolith reference (t_m) is measured once per z."""
    return tmp_path_factory.mktemp("runs")


def harness_run(out: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--load", LOAD, *args],
                          capture_output=True, text=True, timeout=timeout)


def summary(out: Path) -> dict[str, float | str]:
    with (out / "summary.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    return {k: _num(v) for k, v in row.items()}


def _num(v: str) -> float | str:
    try:
        return float(v)
    except ValueError:
        return v


@pytest.mark.parametrize("design,fault", [
    ("centralised", "slm-crash"), ("centralised", "worker-crash"), ("centralised", "slm-pause"),
    ("centralised", "link-delay"), ("centralised", "partition"),
    ("distributed", "slm-crash"), ("distributed", "worker-crash"), ("distributed", "slm-pause"),
    ("distributed", "link-delay"), ("distributed", "partition"),
    ("monolith", "none"), ("centralised", "none"),
])
def test_every_design_and_fault_loses_nothing(runs_dir, design, fault):
    out = runs_dir / f"{design}-{fault}"
    proc = harness_run(out, "--design", design, "--fault", fault, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = summary(out)
    assert list(row) == SUMMARY_COLUMNS
    assert (row["requests"], row["completed"], row["lost"]) == (6, 6, 0)
    if fault in ("slm-crash", "worker-crash", "link-delay"):
        assert row["duplicated"] == 0, "a crash or a slow link must not make the BSS see a workflow twice"
    if fault in ("slm-crash", "worker-crash"):  # issue 22: a clean takeover is no second owner, its redo no double
        assert row["concurrent_owners"] == row["double_effects"] == 0, row
    if fault == "slm-crash":
        with (out / "affected.csv").open() as fh:
            hit = list(csv.DictReader(fh))
        assert hit and max(float(r["latency"]) for r in hit) == pytest.approx(row["t_r_measured"])
        assert any(r["takeovers"] for r in hit), "the survivor's takeover is named per request"
    for name in ("events.jsonl", "requests.csv", "links.csv", "cpu.csv", "config.yaml", "load.json"):
        assert (out / name).stat().st_size > 0, name
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["z"]["design"] == design and recorded["link_backend"] == "proxy"
    assert recorded["commit"] and recorded["machine"]["cpus"]
    status = "pass" if row["duplicated"] == row["concurrent_owners"] == row["double_effects"] == 0 else "fail"
    assert row["verdict"] == status and row["history_holes"] == 0
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("verdict ")]
    assert line.startswith(f"verdict {status}") and ": 6/6 completed, lost 0" in line, line
    if status == "fail":  # the verdict says why: what the history proves
        why = ("completed more than once", "two owners at once", "applied twice in one request epoch")
        assert any(w in line.split(":")[0] for w in why), line
    if fault in ("slm-crash", "worker-crash", "link-delay", "none"):
        assert row["false_suspicions"] == 0, "only a pause or a partition makes survivors suspect a live peer"
    _warm_up_came_first_and_is_left_out(out, users=3)
    _the_fault_did_what_its_doc_promises(out, fault, row)
    if fault in ("slm-crash", "none") and (design, fault) != ("centralised", "none"):  # one run per design
        assert_reanalysis_reproduces(out, runs_dir / "moved" / out.name)


def _the_fault_did_what_its_doc_promises(out: Path, fault: str, row: dict) -> None:
    """faults/catalogue.py: a pause is taken for a crash (the victim is declared dead, a survivor takes over,
    and the victim finishes too: centralised, the BSS sees a duplicate; distributed, both twins run the task and
    the next module drops the second copy); a partition makes each side declare the other dead."""
    events = history.read(out / "events.jsonl")
    assert {e["kind"] for e in events} <= set(KINDS), "every recorded kind is in the written contract"
    struck = [e for e in events if e["svc"] == "harness" and e["kind"] == "fault"]
    dead = [e for e in events if e["kind"] == "peer_dead"]
    if fault == "slm-pause":
        victim = struck[0]["target"]
        assert any(e["peer"] == victim for e in dead), "the frozen driver is declared dead"
        assert row["takeovers"] >= 1, row
        assert row["concurrent_owners"] >= 1, "the checker names the woken driver as a second owner (issue 22)"
        if row["design"] == "centralised":
            assert row["duplicated"] >= 1, row
        else:
            assert row["reexecuted_tasks"] >= 1 and any(e["kind"] == "request_duplicate" for e in events), row
    elif fault == "partition":
        cut = {e["target"] for e in struck if e.get("action") == "cut"}
        assert cut, struck
        sides = {(e["svc"], e["peer"]) for e in dead}
        assert any((b, a) in sides for a, b in sides), f"both sides suspect each other: {sides}"


def _warm_up_came_first_and_is_left_out(out: Path, users: int) -> None:
    """One warm-up workflow per user, all done before `load_start`; none in requests.csv, none hit by the fault."""
    events = history.read(out / "events.jsonl")
    warm = {e["req"] for e in events if e["kind"] == "submitted" and e.get("warmup")}
    assert len(warm) == users
    (start,) = [e for e in events if e["kind"] == "load_start"]
    assert start["warmup_completed"] == users
    assert all(e["t"] < start["t"] for e in events if e["kind"] == "completed" and e["req"] in warm)
    assert all(e["t"] > start["t"] for e in events if e["svc"] == "harness" and e["kind"] == "fault")
    assert not warm & {e.get("req") for e in events if e["svc"] == "harness" and e["kind"] == "fault"}
    with (out / "requests.csv").open() as fh:
        assert not warm & {r["req"] for r in csv.DictReader(fh)}


@pytest.mark.parametrize("design", ["centralised", "distributed"])
def test_measured_times_match_the_model_with_the_latency_proxy(runs_dir, design):
    out = runs_dir / f"accuracy-{design}"
    proc = harness_run(out, "--design", design, "--fault", "slm-crash", "--fault-at", "worst",
                       "--set", "n=4", "--requests", "6", "--users", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = summary(out)
    assert row["lost"] == 0
    assert abs(row["t_c_measured"] / row["t_c_model"] - 1) <= 0.10, row
    lost_time = row["t_r_measured"] - row["t_c_measured"]
    assert abs(lost_time / row["t_l_model"] - 1) <= 0.15, (lost_time, row["t_l_model"])


def test_fit_recomputes_each_trial_from_its_folder_not_from_the_index(runs_dir, tmp_path):
    """A sweep folder whose trials.csv row says something else than the trial's folder: the analysis takes
    the folder's figures (trials.csv is only the index), so a fix to a metric reaches old sweeps."""
    from harness.analysis import fit

    run = runs_dir / "accuracy-centralised"
    if not (run / "summary.csv").exists():
        pytest.skip("needs the accuracy run of this module (run the module, not this test alone)")
    sweep = tmp_path / "sweep"
    shutil.copytree(run, sweep / "trials" / "p1-r1")
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({"points": [{"id": "p1", "overrides": {}}]}))
    row = {**summary(run), "t_c_measured": 999.0, "point": "p1", "repeat": 1, "trial": "p1-r1"}
    with (sweep / "trials.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    _, (trial,) = fit.load_trials(sweep)
    assert trial.row["t_c_measured"] == pytest.approx(summary(run)["t_c_measured"], rel=1e-12)
    assert trial.row["point"] == "p1" and trial.row["trial"] == "p1-r1"


def test_wire_bytes_agree_with_service_counts(runs_dir):
    out = runs_dir / "wire"
    proc = harness_run(out, "--design", "centralised", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = summary(out)
    assert 100 < row["header_bytes_per_message"] < 600, "an HTTP request line and headers"
    assert abs(row["wire_vs_service_op"]) <= 0.05
    assert abs(row["wire_vs_service_state"]) <= 0.05


def test_restart_baseline_recovers_slower_than_state_sharing(runs_dir):
    times = {}
    for mechanism in ("state-sharing", "restart"):
        out = runs_dir / f"mech-{mechanism}"
        proc = harness_run(out, "--design", "centralised", "--mechanism", mechanism, "--fault", "slm-crash", *FAST)
        assert proc.returncode == 0, proc.stderr[-3000:]
        times[mechanism] = summary(out)["t_r_measured"]
    assert times["restart"] > times["state-sharing"]


@pytest.mark.parametrize("args,message", [
    (("--design", "hybrid"), "Invalid value for '--design'"),
    (("--fault", "meteor"), "Invalid value for '--fault'"),
    (("--fault-at", "task:9"), "fault_at: task:K needs 1 <= K <= n=6"),
    (("--fault-at", "soon"), "fault_at: use worst, task:K, task:K@F, time:T, request:K+D or every"),
    (("--set", "s_p=0"), "s_p:"),
    (("--design", "monolith", "--fault", "slm-crash"), "fault: the monolith has no reliability mechanism"),
    (("--rate", "5", "--load", "builtin"), "rate: an open loop (--rate) needs the Locust load"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    proc = harness_run(tmp_path / "never", *args, timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("harness: ") and message in line
    assert not (tmp_path / "never").exists(), "nothing starts before the input is checked"


def test_ctrl_c_leaves_no_process_and_keeps_partial_results(tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--out", str(out), "--load", LOAD,
                             "--design", "centralised", "--fault", "slm-crash", "--set", "n=4", "--requests", "40",
                             "--users", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # started with SIGINT ignored, as a shell starts a background job (a suite run with
                            # `&`): the harness takes SIGINT back (harness/signals.py), or it would run to its end
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until some workflows completed
        rows = (out / "requests.csv").read_text().splitlines() if (out / "requests.csv").exists() else []
        if len(rows) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)  # the stack dump a stuck run gives (harness.cli.stackdump) ...
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # ... and where it hangs, if its teardown does
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no exit 60 s after Ctrl-C; its stacks (before the Ctrl-C, and 60 s after it):\n{err[-60000:]}")
    assert proc.returncode == 130, err[-2000:]
    assert "partial results kept" in err
    dump = err[err.index("harness: stack dump"):]
    assert "--- thread MainThread" in dump and "--- task " in dump and "experiment" in dump, dump[:3000]
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert not leftovers.processes(recorded["run"]), "Ctrl-C must take every service, proxy and load process down"
    with (out / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 2 and all(not math.isnan(float(r["latency"])) for r in rows)
    assert (out / "events.jsonl").stat().st_size > 0
    assert (out / "config.yaml").exists()


def test_sigkilled_harness_leaves_nothing_running(tmp_path):
    """Services die with the harness (PR_SET_PDEATHSIG), proxyd and the load watch their parent; whatever
    might remain is an orphan that the next `harness clean` ends."""
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--out", str(out), "--load", LOAD,
                             "--design", "distributed", "--set", "n=3", "--requests", "40", "--users", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            (out / "requests.csv").exists() and len((out / "requests.csv").read_text().splitlines()) >= 2):
        time.sleep(0.2)
    run = yaml.safe_load((out / "config.yaml").read_text())["run"]
    assert leftovers.processes(run), "the run was up"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while leftovers.processes(run) and time.monotonic() < deadline:
        time.sleep(0.1)
    remaining = leftovers.processes(run)
    assert remaining == leftovers.processes(run, orphans=True), "whatever remains is recognised as an orphan"
    subprocess.run([sys.executable, "-m", "harness", "clean"], check=True, capture_output=True, timeout=30)
    assert leftovers.processes(run) == []


def test_the_builtin_load_warms_up_too(runs_dir):
    out = runs_dir / "builtin-warm"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--load", "builtin",
                           "--design", "centralised", "--fault", "slm-crash", *FAST, "--set", "warmup=2"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = summary(out)
    assert (row["requests"], row["completed"], row["lost"]) == (6, 6, 0)
    _warm_up_came_first_and_is_left_out(out, users=2)
