"""`harness clean`: ends what a crashed run left behind, never a run that is still going."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from harness.runtime.local import OWNER_ENV, RUN_ENV


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
