"""`harness clean`: ends what a crashed run left behind, never a run that is still going."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.runtime.local import OWNER_ENV, RUN_ENV

ROOT = Path(__file__).resolve().parents[1]


def labelled_sleeper(owner: int, run: str) -> subprocess.Popen:
    env = {**os.environ, RUN_ENV: run, OWNER_ENV: str(owner)}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def clean(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "clean", *args], capture_output=True, text=True,
                          timeout=30)


def test_clean_ends_orphans_and_spares_live_runs():
    orphan = labelled_sleeper(dead_pid(), "crashed-run")
    live = labelled_sleeper(os.getpid(), "live-run")
    try:
        proc = clean()
        assert proc.returncode == 0, proc.stderr
        assert orphan.wait(timeout=10) is not None
        assert psutil.pid_exists(live.pid) and live.poll() is None, "a run whose harness lives is not a leftover"
        assert "leftover process(es) ended" in proc.stdout
        proc = clean("--all", "--run", "live-run")  # never a bare --all in a test: it ends every live run here
        assert live.wait(timeout=10) is not None
    finally:
        for p in (orphan, live):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_clean_with_nothing_to_do_says_so():
    proc = clean()
    assert proc.returncode == 0
    assert proc.stdout.strip().splitlines()[-1].startswith("clean:")


def test_clean_without_a_docker_engine_still_ends_processes(tmp_path):
    """No Engine at DOCKER_HOST: the containers' part finds nothing (no error, no traceback), processes still go."""
    orphan = labelled_sleeper(dead_pid(), "crashed-run-no-engine")
    try:
        proc = subprocess.run([sys.executable, "-m", "harness", "clean", "--run", "crashed-run-no-engine"],
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert orphan.wait(timeout=10) is not None
        assert "1 leftover process(es) ended, 0 container(s)/network(s) removed" in proc.stdout
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


# --- clean-up deletes only what the harness made (issue #20) ---------------------------------------------------

def test_a_labelled_process_naming_a_foreign_directory_is_ended_and_the_directory_survives(tmp_path):
    """Any local process can carry the run label and a broker-data path: `harness clean` ends it (it is an
    orphan) but deletes nothing it names. Before the fix this deleted the scratch directory."""
    from harness.runtime.broker import BROKER_DATA_ENV

    scratch = tmp_path / "precious"
    scratch.mkdir()
    (scratch / "keep.txt").write_text("mine", encoding="utf-8")
    state = tmp_path / "state"
    run = f"foreign{os.getpid()}"
    env = {**os.environ, RUN_ENV: run, OWNER_ENV: str(dead_pid()), BROKER_DATA_ENV: str(scratch),
           "MANOBENCH_STATE": str(state)}
    sleeper = subprocess.Popen(["sleep", "60"], env=env)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness", "clean", "--run", run], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "MANOBENCH_STATE": str(state)})
        assert proc.returncode == 0, proc.stderr
        assert sleeper.wait(timeout=10) is not None, "the orphan is ended"
        assert (scratch / "keep.txt").read_text(encoding="utf-8") == "mine", "a path from its environment is kept"
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_only_recorded_directories_inside_the_state_root_are_removed(tmp_path, monkeypatch):
    """remove_data follows a record only to a real directory of ours directly under the root: a record whose
    directory is a symlink to elsewhere, or a malformed record, removes nothing outside; a real one goes."""
    from harness.runtime import broker_data

    monkeypatch.setenv("MANOBENCH_STATE", str(tmp_path / "state"))
    root = broker_data.data_root()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine", encoding="utf-8")
    (root / "evil").symlink_to(outside, target_is_directory=True)  # a planted link under the root
    (root / "evil.json").write_text(json.dumps({"run": "r1", "owner": "1"}), encoding="utf-8")
    (root / "junk.json").write_text("{not json", encoding="utf-8")
    (root / "junk").mkdir()
    real = root / "real"
    broker_data.record(real, "r1", str(os.getpid()))
    real.mkdir()
    (real / "mnesia").write_text("x", encoding="utf-8")

    gone = broker_data.remove_data({"r1", "junk"})

    assert gone == [real] and not real.exists() and not (root / "real.json").exists()
    assert (outside / "keep.txt").read_text(encoding="utf-8") == "mine", "a symlink is never followed"
    assert (root / "evil").is_symlink() and (root / "junk").is_dir(), "what is not ours or not recorded stays"


ORPHAN_BROKER = """
import asyncio, sys
from pathlib import Path
from harness.runtime.broker import LocalBroker
from harness.runtime.local import LocalRuntime

async def main():
    out = Path(sys.argv[2])  # relative, as the default run folder is
    rt = LocalRuntime(sys.argv[1], out)
    broker = LocalBroker(sys.argv[1], out, rt.host_of("broker"), rt.env({}))
    await broker.start()
    print(broker.data, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(), reason="no rabbitmq-server")
def test_a_real_brokers_recorded_data_directory_is_removed_and_a_foreign_one_kept(tmp_path):
    """A broker started from a relative run folder by a harness that is then SIGKILLed, and beside it an impostor
    of the same run naming a scratch directory: `harness clean` ends all of them, removes the broker's own
    recorded directory (under the state root) and keeps the scratch directory."""
    from harness.runtime import leftovers
    from harness.runtime.broker import BROKER_DATA_ENV

    state = tmp_path / "state"
    work = tmp_path / "work"
    work.mkdir()
    scratch = tmp_path / "precious"
    scratch.mkdir()
    run = f"realbroker{os.getpid()}"
    env = {**os.environ, "MANOBENCH_STATE": str(state), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", ORPHAN_BROKER, run, "results/run"], stdout=subprocess.PIPE,
                             cwd=work, env=env, text=True)
    impostor = subprocess.Popen(["sleep", "60"], env={**env, RUN_ENV: run, OWNER_ENV: str(dead_pid()),
                                                      BROKER_DATA_ENV: str(scratch)})
    try:
        assert child.stdout is not None
        data = Path(child.stdout.readline().strip())
        assert data.is_dir() and data.parent == state.resolve() / "brokers", data
        assert (work / "results" / "run" / "logs" / "broker").is_dir(), "the logs stay in the run folder"
        child.kill()
        child.wait()
        proc = subprocess.run([sys.executable, "-m", "harness", "clean", "--run", run], capture_output=True,
                              text=True, timeout=60, cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr
        assert leftovers.processes(run) == [] and impostor.poll() is not None
        assert not data.exists() and not data.with_name(data.name + ".json").exists()
        assert scratch.is_dir()
    finally:
        for p in (child, impostor):
            if p.poll() is None:
                p.kill()
                p.wait()
        leftovers.end(leftovers.processes(run))


def test_stale_records_go_and_live_ones_stay(tmp_path, monkeypatch):
    """A recorded directory whose harness is dead and whose run has no process left is removed by
    remove_stale_data; one whose harness lives, or whose run still has a labelled process, stays."""
    from harness.runtime import broker_data, leftovers

    monkeypatch.setenv("MANOBENCH_STATE", str(tmp_path / "state"))
    root = broker_data.data_root()
    made = {}
    for name, owner in (("stale", dead_pid()), ("live", os.getpid()), ("running", dead_pid())):
        made[name] = root / f"{name}{os.getpid()}"
        broker_data.record(made[name], f"{name}{os.getpid()}", str(owner))
        made[name].mkdir()
    sleeper = labelled_sleeper(dead_pid(), f"running{os.getpid()}")
    try:
        assert leftovers.remove_stale_data() == [f"stale{os.getpid()}"]
        assert not made["stale"].exists() and made["live"].is_dir() and made["running"].is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
