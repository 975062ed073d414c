"""`harness sweep`: the spec is checked whole before anything runs, and a stopped sweep resumes without
running a finished trial again (a real subprocess, stopped with SIGINT and then SIGKILL)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import UserError
from harness.experiment import sweep
from harness.experiment.sweep import admission
from harness.measure.summary import SUMMARY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n": 2, "t_m": 2, "time_scale": 0.1, "requests": 2, "users": 2, "fault": "none"}


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=kw.pop("timeout", 120), **kw)


# --- the spec, checked before anything runs ------------------------------------------------------------------

BAD_SPECS = [
    ({"base": TINY, "grid": {"h_r": [1]}, "bogus": 1}, "unknown top-level key 'bogus'"),
    ({"base": {**TINY, "hr": 2}}, "base.hr: unknown key 'hr'"),
    ({"base": TINY, "grid": {"hr": [1, 2]}}, "grid.hr: unknown key 'hr'"),
    ({"base": TINY, "grid": {"h_r": 2}}, "grid.h_r: expected a non-empty list"),
    ({"base": TINY, "grid": {"h_r": []}}, "grid.h_r: expected a non-empty list"),
    ({"base": TINY, "grid": {"h_r": [1, 1]}}, "grid.h_r: a value is listed twice"),
    ({"base": TINY, "points": {"n": 2}}, "points: expected a non-empty list"),
    ({"base": TINY, "points": [{"n": 2}, 5]}, "points[1]: expected a mapping"),
    ({"base": TINY, "points": [{"n": 3}], "grid": {"n": [4]}}, "points[0].n: also swept in grid"),
    ({"base": TINY, "grid": {"t_h_mult": [3, 2]}}, "point 2 (t_h_mult=2): t_h_mult: must be at least 3"),
    ({"base": TINY, "grid": {"s_o": [1, 3]}}, "point 2 (s_o=3): s_o: must be <= n"),
    ({"base": TINY, "extra": [{"design": "monolith", "fault": "slm-crash"}]}, "extra[0] (design=monolith"),
    ({"base": TINY, "grid": {"h_r": [1]}, "repeat": 0}, "repeat: expected a whole number >= 1"),
    ({"base": TINY, "grid": {"h_r": [1]}, "repeat": "two"}, "repeat: expected a whole number >= 1"),
    ({"base": TINY, "points": [{"h_r": 1}, {"h_r": 1}]}, "is the same point as point 1"),
    ({"base": {**TINY, "link_backend": "netem"}}, "link_backend: netem needs a network namespace per service"),
]


@pytest.mark.parametrize("spec,message", BAD_SPECS, ids=[m.split(":")[0][:30] for _, m in BAD_SPECS])
def test_a_bad_spec_is_refused_naming_the_key(spec, message):
    with pytest.raises(UserError, match=r"^sweep spec: ") as err:
        sweep.plan(spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_cli_refuses_a_bad_spec_with_one_line_and_runs_nothing(tmp_path):
    spec = write_spec(tmp_path / "bad.yaml", {"base": TINY, "grid": {"h_r": [1, 2, 0.5]}, "extra": [{"n": 0}]})
    out = tmp_path / "out"
    proc = cli("sweep", str(spec), "--out", str(out), "--load", "builtin")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("harness: sweep spec: extra[0] (n=0): n:")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("text,message", [("base: [1, 2\n", "does not parse"), ("- 1\n", "top level must be")])
def test_a_spec_file_that_is_not_a_mapping_is_refused(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        sweep.read_spec(path)
    with pytest.raises(UserError, match="no such file"):
        sweep.read_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "experiments").glob("fig*.yaml")))
def test_the_shipped_specs_are_valid(name):
    p = sweep.plan(sweep.read_spec(ROOT / "experiments" / name))
    assert len(p.points) >= 3
    assert all(pt.z.fault == "slm-crash" for pt in p.points)  # R_r is measured everywhere
    if name.endswith("-ci.yaml"):
        assert len(p.trials) <= 4 and all(pt.z.requests <= 6 for pt in p.points)


def test_points_cross_the_grid_and_extra_points_do_not():
    p = sweep.plan({"base": TINY, "points": [{"design": "centralised"}, {"design": "distributed"}],
                    "grid": {"n": [2, 3]}, "extra": [{"n": 4, "time_scale": 0.2}], "repeat": 2})
    assert [pt.overrides for pt in p.points] == [
        {"design": "centralised", "n": 2}, {"design": "centralised", "n": 3},
        {"design": "distributed", "n": 2}, {"design": "distributed", "n": 3}, {"n": 4, "time_scale": 0.2}]
    assert p.swept == ["design", "n", "time_scale"]
    assert [t.id for t in p.trials][:5] == [f"{pt.id}-r1" for pt in p.points]  # every point once first
    assert len(p.trials) == 10 and len({t.id for t in p.trials}) == 10
    again = sweep.plan({"base": TINY, "grid": {"n": [3, 2]}, "points": [{"design": "centralised"}]})
    assert {pt.id for pt in again.points} <= {pt.id for pt in p.points}  # ids do not depend on the order
    assert p.columns == [*SUMMARY_COLUMNS, "point", "repeat", "trial", "trial_seconds", "host_load"]
    assert sweep.plan({"base": TINY, "grid": {"t_h_mult": [3, 4]}}).columns[-1] == "t_h_mult"


def test_a_torn_last_row_is_not_a_finished_trial(tmp_path):
    path = tmp_path / "trials.csv"
    path.write_text("a,trial,b\n1,x-r1,2\n3,y-r1,4\n5,z-r", encoding="utf-8")
    assert [r["trial"] for r in sweep.read_rows(path)] == ["x-r1", "y-r1"]
    table = sweep.TrialsCsv(path, ["a", "trial", "b"])
    table.append({"a": 7, "trial": "z-r1", "b": 8})
    assert [r["trial"] for r in sweep.read_rows(path)] == ["x-r1", "y-r1", "z-r1"]
    with pytest.raises(UserError, match="other columns"):
        sweep.TrialsCsv(path, ["a", "trial"])


def test_a_folder_of_another_sweep_is_refused(tmp_path):
    first = sweep.plan({"base": TINY, "grid": {"h_r": [1, 2]}})
    sweep.prepare(tmp_path, first, "a.yaml", "builtin")
    more = sweep.plan({"base": TINY, "grid": {"h_r": [1, 2]}, "repeat": 3})
    sweep.prepare(tmp_path, more, "a.yaml", "builtin")  # more repeats of the same sweep: fine
    with pytest.raises(UserError, match="holds another sweep"):
        sweep.prepare(tmp_path, sweep.plan({"base": TINY, "grid": {"h_r": [1, 4]}}), "b.yaml", "builtin")
    with pytest.raises(UserError, match="same --load"):
        sweep.prepare(tmp_path, first, "a.yaml", "locust")
    record = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert len(record["sessions"]) == 2 and record["commit"] and record["machine"]["cpus"]


# --- stop and resume, for real -----------------------------------------------------------------------------


def rows(out: Path) -> list[dict[str, str]]:
    return sweep.read_rows(out / "trials.csv")


def start(spec: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(spec), "--out", str(out),
                             "--load", "builtin", "--jobs", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_rows(out: Path, count: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(rows(out)) < count:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.1)


def stamps(out: Path, trial: str) -> dict[str, float]:
    folder = out / "trials" / trial
    return {p.name: p.stat().st_mtime_ns for p in [folder, *folder.iterdir()]}


@pytest.mark.slow
def test_a_stopped_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", {"base": TINY, "grid": {"h_r": [1, 2, 3, 4]}})
    out = tmp_path / "sweep"

    # Ctrl-C once the first trial is in: exit 130, the running trial torn down, finished ones kept
    proc = start(spec, out)
    wait_rows(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    done = [r["trial"] for r in rows(out)]
    assert len(done) >= 1
    assert f"interrupted: {len(done)} of 4 trials finished" in err and f"harness sweep {spec}" in err
    before = {t: stamps(out, t) for t in done}

    # SIGKILL (no chance to clean up) once one more trial is in
    proc = start(spec, out)
    wait_rows(out, len(done) + 1, proc)
    proc.kill()
    proc.communicate(timeout=30)
    killed_done = [r["trial"] for r in rows(out)]
    before.update({t: stamps(out, t) for t in killed_done if t not in before})
    assert len(killed_done) < 4, "the sweep finished before it could be killed: make its trials longer"

    # the same command again finishes the rest and touches nothing that was finished
    proc = subprocess.run([sys.executable, "-m", "harness", "sweep", str(spec), "--out", str(out),
                           "--load", "builtin", "--jobs", "1"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(killed_done)} already finished, {4 - len(killed_done)} to run" in proc.stderr
    final = rows(out)
    assert sorted(r["trial"] for r in final) == sorted(t.id for t in sweep.plan(sweep.read_spec(spec)).trials)
    for trial, mtimes in before.items():
        assert stamps(out, trial) == mtimes, f"finished trial {trial} was touched by the resumed sweep"
    assert {r["h_r"] for r in final} == {"1.0", "2.0", "3.0", "4.0"}
    assert all(r["completed"] == "2" and r["lost"] == "0" for r in final)
    assert all(float(r["trial_seconds"]) > 0 and r["point"] and r["repeat"] == "1" for r in final)
    record = yaml.safe_load((out / "sweep.yaml").read_text())
    assert len(record["sessions"]) == 3
    with (out / "trials.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS and {"trial", "repeat", "point"} <= set(header)
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    assert os.path.exists(out / ".cache")


@pytest.mark.slow
def test_jobs_run_trials_side_by_side_and_measure_the_monolith_once(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", {"base": TINY, "grid": {"h_r": [1, 2, 4]}})
    out = tmp_path / "sweep"
    proc = cli("sweep", str(spec), "--out", str(out), "--load", "builtin", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 at a time" in proc.stderr and "ETA" in proc.stderr
    assert len(rows(out)) == 3 and len(list((out / ".cache").glob("monolith-*.json"))) == 1
    measured = [t for t in (out / "trials").iterdir() if (t / "monolith").exists()]
    assert len(measured) == 1  # the others waited for it instead of measuring it again


def test_concurrent_trials_are_admitted_by_reserved_cpu_machine_wide(tmp_path, monkeypatch):
    """Each admitted trial reserves its need on the machine-wide board at once (no gap needed for its start-up
    to show); a heavy trial that does not fit keeps its room reserved, so lighter ones leave it room; the
    first trial on the machine is always admitted; a dead sweep's entry does not count."""
    monkeypatch.setattr(admission, "ADMIT_GAP", 0.0)
    plan_ = sweep.plan({"base": {**TINY, "fault": "slm-crash"},
                        "points": [{"design": "centralised"}, {"design": "distributed", "n": 20}]})
    light, heavy = plan_.points
    board = tmp_path / "board"
    a, b = sweep.Headroom(cap=0.6, board=board), sweep.Headroom(cap=0.6, board=board)
    assert a.mine != b.mine  # two sweeps in one process here: each its own entry
    for h in (a, b):
        h.cores, h.busy, h.sampled = 2, 0.0, True  # an idle 2-core host: room for 1.2 cores
    a.peaks[light.id] = b.peaks[light.id] = 0.45
    assert not a.heavy(light) and a.heavy(heavy)  # the prior of 40 modules heartbeating: above HEAVY
    assert a.admit(light)
    a.admitted("l1", light, os.getpid())
    assert b.admit(light)  # 0.45 + 0.45 <= 1.2
    b.admitted("l2", light, os.getpid())
    assert not a.admit(light) and a.why == "cpu"  # 1.35 > 1.2: the other sweep's reservation counts at once
    a.peaks[heavy.id] = 1.0
    b.done("l2")
    assert not a.admit(heavy) and a.why == "cpu" and a.waiting == 1.0  # 0.45 + 1.0 > 1.2: it waits
    assert not b.admit(light)  # 0.45 reserved + 0.45 + the 1.0 that a keeps for its heavy trial > 1.2
    a.done("l1")
    assert a.admit(heavy) and a.waiting == 0.0
    a.admitted("h1", heavy, os.getpid())
    assert not b.admit(light)
    a.release()  # a's sweep ended: its entry leaves the board
    assert b.admit(light)
    dead = board / "999999999-0123abcd.json"
    dead.write_text(json.dumps({**entry(999999999), "running": 1, "reserved": 1.2}))
    dead.with_suffix(".alive").touch()  # what a SIGKILLed sweep leaves: its lock file, held by nobody now
    assert b.admit(light) and not dead.exists()
    b.release()


def test_a_running_trials_cpu_rate_is_measured_from_ready_on(monkeypatch):
    monkeypatch.setattr(admission, "WINDOW", 0.0)
    plan_ = sweep.plan({"base": TINY, "points": [{"design": "centralised"}]})
    h = sweep.Headroom(cap=1.0, board=Path("/nonexistent/board"))
    h.watched["t"] = sweep.Watched(os.getpid(), plan_.points[0].id, 0.1)
    h.sample()
    assert plan_.points[0].id not in h.peaks  # not ready: the start-up burst is not its need
    h.ready("t")
    h.sample()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    h.sample()
    assert h.peaks[plan_.points[0].id] > 0.3 and h.need(plan_.points[0]) == h.peaks[plan_.points[0].id]
    assert h.watched["t"].reserved == 0.0  # a light trial measured: its use is in the host's, nothing held
    h.watched["t"].need = 2 * sweep.HEAVY  # a heavy one holds what its busiest moments may add
    assert h.watched["t"].reserved == pytest.approx(2 * sweep.HEAVY - h.watched["t"].rate)


def test_side_by_side_each_repeat_starts_with_its_longest_trials(tmp_path):
    plan_ = sweep.plan({"base": TINY, "grid": {"n": [2, 6, 4]}, "repeat": 2})
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    one, many = sweep.Runner(tmp_path / "a", plan_, "builtin", 1), sweep.Runner(tmp_path / "b", plan_, "builtin", 4)
    assert [t.id for t in one.todo()] == [t.id for t in plan_.trials]  # one at a time: the plan's order
    order = [(t.repeat, t.point.overrides["n"]) for t in many.todo()]
    assert order == [(1, 6), (1, 4), (1, 2), (2, 6), (2, 4), (2, 2)]  # still repeat-major


# --- the machine-wide board: validated on read, under the state root (issue #20) ----------------------------

def entry(pid: int, **kw) -> dict:
    """A board entry as a sweep writes it (harness/experiment/sweep/admission.py)."""
    return {"kind": "manobench-sweep", "pid": pid, "running": 1, "reserved": 0.0, "waiting": 0.0, **kw}


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_planted_malformed_foreign_and_stale_entries_do_not_stall_an_admission(tmp_path, monkeypatch):
    """A --jobs 2 sweep with one light trial running has room for a second. Junk, a dead sweep's entry, entries
    that no live sweep stands behind (a live pid, pid 1, a name that disagrees), another kind, absurd numbers,
    a symlink, each claiming the whole machine, are all ignored (the dead sweep's entry removed, the rest left
    alone); an entry whose sweep is alive (holds its .alive lock) does count."""
    monkeypatch.setattr(admission, "ADMIT_GAP", 0.0)
    plan_ = sweep.plan({"base": {**TINY, "fault": "slm-crash"}, "points": [{"design": "centralised"}]})
    light = plan_.points[0]
    board = tmp_path / "board"
    board.mkdir(mode=0o700)
    h = sweep.Headroom(cap=0.6, board=board)
    h.cores, h.busy, h.sampled = 2, 0.0, True  # an idle 2-core host: room for 1.2 cores
    h.peaks[light.id] = 0.45
    assert h.admit(light)
    h.admitted("l1", light, os.getpid())  # one running: the next needs room, not "the first is always admitted"

    full = {"running": 3, "reserved": 1.2, "waiting": 1.2}  # what would leave no room at all
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(entry(os.getpid(), **full)))
    me, dead = os.getpid(), 999999999
    planted = {
        "junk.json": "{{ not json",
        f"{me}-00000000.json": "[1, 2]",
        f"{dead}-11111111.json": json.dumps(entry(dead, **full)),  # a dead sweep: its .alive held by nobody
        f"{me}-22222222.json": json.dumps(entry(me, **full)),  # a live pid, but no sweep stands behind it
        "1-33333333.json": json.dumps(entry(1, **full)),  # pid 1: alive, no sweep
        f"{me}-44444444.json": json.dumps({**entry(me, **full), "kind": "other"}),
        f"{me}-55555555.json": json.dumps(entry(me, running=1, reserved=1e9)),
        f"{me}-66666666.json": json.dumps(entry(me + 1, **full)),  # name and pid disagree
        f"{me}-77777777.json": json.dumps(entry(me, **full)) + " " * 5000,  # too big
    }
    for name, text in planted.items():
        (board / name).write_text(text, encoding="utf-8")
    (board / f"{dead}-11111111.alive").touch()
    (board / f"{me}-88888888.json").symlink_to(elsewhere)

    t0 = time.monotonic()
    assert h.admit(light), h.why
    assert time.monotonic() - t0 < 5, "a decision is milliseconds of work: nothing waited on a planted file"
    h.pending = 0.0  # that trial is not started here: what it reserved goes
    assert not (board / f"{dead}-11111111.json").exists() and not (board / f"{dead}-11111111.alive").exists()
    assert all((board / name).exists() for name in planted if not name.startswith(str(dead)))
    assert elsewhere.exists(), "what is not a dead sweep's entry is left alone"

    live = board / "424242-99999999.json"  # a sweep that is alive elsewhere: it holds its .alive file
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(live.with_suffix(".alive"))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        live.write_text(json.dumps(entry(424242, **full)))
        assert not h.admit(light) and h.why == "cpu", "a valid entry of a live sweep counts"
        holder.kill()
        holder.wait()
        assert h.admit(light) and not live.exists(), "once its sweep died, its entry goes"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    h.release()


def test_the_board_and_lock_live_under_the_state_root_closed_to_others(tmp_path, monkeypatch):
    monkeypatch.setenv("MANOBENCH_STATE", str(tmp_path / "state"))
    monkeypatch.setattr(admission, "ADMIT_GAP", 0.0)
    plan_ = sweep.plan({"base": TINY, "points": [{"design": "centralised"}]})
    h = sweep.Headroom(cap=0.9)
    assert h.admit(plan_.points[0])
    h.admitted("t", plan_.points[0], os.getpid())
    root = (tmp_path / "state").absolute()
    assert h.board == root / "sweep" / "admission.d" and h.mine.parent == h.board and h.mine.exists()
    assert h.board.stat().st_mode & 0o777 == 0o700
    assert h.lock == root / "sweep" / "admission.lock" and h.lock.stat().st_mode & 0o777 == 0o600
    assert h.mine.stat().st_mode & 0o077 == 0 and h.mine.with_suffix(".alive").stat().st_mode & 0o777 == 0o600
    h.release()
    assert not h.mine.exists() and not h.mine.with_suffix(".alive").exists()


# --- the defaults are the fast path (issue #24) --------------------------------------------------------------

def test_the_defaults_are_builtin_and_auto_and_a_spec_or_the_command_line_overrides(tmp_path):
    base = {"base": TINY, "grid": {"h_r": [1, 2]}}
    assert sweep.resolve_run(base, tmp_path / "new", None, None) == ("builtin", "auto")
    stated = {**base, "load": "locust", "jobs": 1}
    assert sweep.resolve_run(stated, tmp_path / "new", None, None) == ("locust", 1)
    assert sweep.resolve_run(stated, tmp_path / "new", "builtin", "3") == ("builtin", 3)
    assert sweep.resolve_run(base, tmp_path / "new", None, "auto") == ("builtin", "auto")
    sweep.prepare(tmp_path / "old", sweep.plan(base), "a.yaml", "locust")  # a folder started with Locust
    assert sweep.resolve_run(base, tmp_path / "old", None, None)[0] == "locust", "resumed as it was started"
    assert 2 <= admission.auto_jobs() <= admission.AUTO_JOBS_MAX and admission.auto_jobs(2) == 8


@pytest.mark.parametrize("spec,message", [
    ({"load": "gatling"}, "sweep spec: load: expected one of"),
    ({"jobs": 0}, "sweep spec: jobs: expected auto or a whole number"),
    ({"jobs": "many"}, "sweep spec: jobs: expected auto or a whole number"),
    ({"jobs": True}, "sweep spec: jobs: expected auto or a whole number"),
])
def test_a_specs_own_run_defaults_are_checked(spec, message):
    with pytest.raises(UserError, match=message):
        sweep.plan({"base": TINY, "grid": {"h_r": [1, 2]}, **spec})


def test_changing_load_or_jobs_in_a_spec_keeps_it_the_same_sweep(tmp_path):
    base = {"base": TINY, "grid": {"h_r": [1, 2]}}
    sweep.prepare(tmp_path, sweep.plan(base), "a.yaml", "builtin")
    sweep.prepare(tmp_path, sweep.plan({**base, "jobs": 2, "load": "builtin"}), "a.yaml", "builtin", 2)
    record = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert record["sessions"][-1]["jobs"] == 2 and record["sessions"][-1]["load"] == "builtin"


def test_bad_jobs_or_cpu_share_on_the_command_line_is_one_line_and_makes_no_folder(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", {"base": TINY, "grid": {"h_r": [1, 2]}})
    out = tmp_path / "out"
    for args, env, message in ((["--jobs", "0"], {}, "--jobs: expected auto"),
                               (["--jobs", "٣"], {}, "--jobs: expected auto"),
                               ([], {"MANOBENCH_SWEEP_CPU": "lots"}, "MANOBENCH_SWEEP_CPU: expected")):
        proc = cli("sweep", str(spec), "--out", str(out), *args, env={**os.environ, **env})
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not out.exists()


@pytest.mark.slow
def test_a_sweep_with_no_flags_runs_the_fast_path(tmp_path):
    """No --load, no --jobs: the builtin load (no Locust files in a trial), admitted by CPU headroom (--jobs
    auto), both recorded in the session."""
    spec = write_spec(tmp_path / "tiny.yaml", {"base": TINY, "grid": {"h_r": [1, 2]}})
    out = tmp_path / "sweep"
    proc = cli("sweep", str(spec), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "as the CPU admits: --jobs auto, load builtin" in proc.stderr
    assert len(rows(out)) == 2
    assert not any((out / "trials").glob("*/locust*")), "no trial ran Locust"
    session = yaml.safe_load((out / "sweep.yaml").read_text())["sessions"][-1]
    assert session["load"] == "builtin" and session["jobs"] == "auto"


def test_a_trial_is_ready_when_its_history_says_so_whole():
    """The runner renices a starting trial once the harness's `ready` is in its history, read as the history
    reader reads a line (the bytes `"kind": "ready"` inside another event's text, or a torn line, are not it)."""
    from harness.experiment.sweep.runner import _is_ready

    ready = {"t": 1.5, "wall": 1.7e9, "svc": "harness", "kind": "ready"}
    assert _is_ready(json.dumps(ready).encode())
    assert _is_ready(json.dumps(ready, separators=(",", ":")).encode())
    assert not _is_ready(json.dumps(ready).encode()[:-3]), "a torn line"
    assert not _is_ready(json.dumps({**ready, "kind": "load_start", "waited": 0, "quiet": 0, "suspicions_before": 0,
                                     "warmup": 0, "warmup_completed": 0}).encode())
    assert not _is_ready(json.dumps({**ready, "svc": "slm-a"}).encode()), "only the harness says the run is ready"
    text = {"t": 2.0, "wall": 1.7e9, "svc": "slm-a", "kind": "error", "plane": "api", "path": "/x",
            "error": '"kind": "ready"'}
    assert not _is_ready(json.dumps(text).encode())
