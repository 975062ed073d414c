"""One trial of a sweep, in a child process: `python -m harness.experiment.sweep.trial DIR PARENT_PID`.

The sweep (harness/experiment/sweep/runner.py) writes DIR/trial.json and starts this module on it, forked from its fork
server (harness/runtime/forkserver.py, which runs it as `__main__` with these arguments) or as an interpreter
of its own (MANOBENCH_FORKSERVER=0). It runs `harness.experiment.run.experiment` into DIR, with its pid in
DIR/trial.pid (so a resumed sweep can wait for a trial still tearing down before it clears the folder:
`clear_trial_dir`) and its CPU time in DIR/trial_cpu.json. It gets SIGINT when the sweep dies, even SIGKILLed,
so the run tears down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from harness.plan import config
from harness.runtime import forkserver

TRIAL_MODULE = "harness.experiment.sweep.trial"  # `python -m harness.experiment.sweep.trial DIR PARENT` runs one trial
TRIAL_PRELOAD = "harness.experiment.run"  # what a trial imports: the fork server imports it once per sweep


def _pid_alive_child(pid: int) -> bool:
    """Whether pid still runs a trial of a sweep (not a recycled pid): its command line names this module, as
    `python -m` does, or a forked trial's (the fork server's) does."""
    try:
        import psutil

        cmd = " ".join(psutil.Process(pid).cmdline())
    except Exception:
        return False
    return TRIAL_MODULE in cmd


def clear_trial_dir(path: Path, wait: float = 30.0) -> None:
    """Remove a half-done trial folder; first let a trial process still working in it (a sweep that was
    SIGKILLed: its child got SIGINT and is tearing down) finish, or end it."""
    pid_file = path / "trial.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            deadline = time.monotonic() + wait
            while _pid_alive_child(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_alive_child(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
    shutil.rmtree(path, ignore_errors=True)


def trial_main(argv: list[str]) -> None:
    """`python -m harness.experiment.sweep.trial DIR PARENT_PID`: run DIR/trial.json's experiment into DIR."""
    trial_dir, parent = Path(argv[0]), int(argv[1])
    forkserver.die_with_parent(signal.SIGINT)  # SIGINT when the sweep dies: the run tears down in order
    if os.getppid() != parent:  # the sweep died before the death signal was armed
        raise SystemExit(130)
    (trial_dir / "trial.pid").write_text(str(os.getpid()))
    info = json.loads((trial_dir / "trial.json").read_text())
    z = config.build(info["z"])
    from harness.experiment import run

    wall = time.monotonic()
    try:
        asyncio.run(run.experiment(z, trial_dir, load=info["load"], cache=Path(info["cache"])))
    except KeyboardInterrupt:
        print("trial interrupted: torn down", flush=True)
        raise SystemExit(130) from None
    (trial_dir / "trial_cpu.json").write_text(json.dumps(
        {"cpu_seconds": _tree_cpu_seconds(), "wall_seconds": time.monotonic() - wall}))


def _tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and every child it reaped: the trial's services, proxyd
    and the load generator on the local runtime (a container's processes are the Engine's children, not ours)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m harness.experiment.sweep.trial TRIAL_DIR PARENT_PID  (internal; use `harness sweep`)",
              file=sys.stderr)
        raise SystemExit(2)
    trial_main(sys.argv[1:])
