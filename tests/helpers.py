"""Shared test helpers: run a design live, trigger faults on history events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.experiment.testbed import Testbed
from harness.history import Event
from harness.plan import config


def experiment(**values: Any) -> config.Experiment:
    """A small, fast experiment: n = 4 tasks of 1 paper-second at 1/10 of real time, small payloads.

    At 1/10, t_h is 150 ms of wall time: enough that CPU contention on a busy 2-core machine does not pass
    for a crash (at 1/20 it sometimes did, and the history then rightly showed duplicates)."""
    return config.build({"n": 4, "t_i": 1.0, "t_o": 0.1, "time_scale": 0.1, "s_z": 20, "P_a": 10, "P_b": 10, "P": 20,
                         **values})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def load(tmp: Path, z: config.Experiment, requests: int, users: int,
               during: Callable[[Testbed], Any] | None = None) -> list[Event]:
    """Bring z up, drive `requests` through it (closed loop), wait for the stragglers, return the history."""
    async with Testbed(z, tmp) as tb:
        if during:
            during(tb)
        reqs = await tb.bss.drive(requests, users=users, timeout=30)
        await tb.bss.wait_all(reqs, timeout=30)
        await asyncio.sleep(0.1)  # let late duplicates (if any) arrive before judging
    return tb.collector.events


def owner_of(events: list[Event], req: str) -> str:
    return next(e["owner"] for e in events if e["kind"] == "request_received" and e["req"] == req)


def kill_when(tb: Testbed, predicate: Callable[[Event], bool], victim: Callable[[Event], str]) -> list[str]:
    """SIGKILL `victim(event)` the moment the first event matching `predicate` arrives; returns who was killed."""
    killed: list[str] = []

    def notify(event: Event) -> None:
        if not killed and predicate(event):
            killed.append(victim(event))
            tb.kill(killed[0])

    tb.collector.subscribe(notify)
    return killed


def assert_one_line_exit_2_or_ran(code: int, out: str, err: str, file: str | None = None) -> None:
    """A command line's answer to a doctored folder: one line `harness: ...` and exit 2 (naming `file` when
    given), or exit 0; never a traceback."""
    assert "Traceback" not in out + err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("harness: "), err
        if file:
            assert file in lines[0], lines[0]
    else:
        assert code == 0, (code, err[-2000:])


def new_req() -> str:
    return str(uuid.uuid4())


DERIVED = ("summary.csv", "links.csv", "affected.csv", "cpu.csv")


def assert_reanalysis_reproduces(out: Path, elsewhere: Path, restore: bool = False) -> None:
    """Move a finished run folder to another path (the original is gone), recompute its tables there with
    `harness analyse` in a fresh process, and require every value to be what the run wrote (1e-9 relative).
    `restore`: move it back afterwards, for tests that read the run again."""
    import csv
    import math
    import shutil
    import subprocess
    import sys

    def rows(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    written = {name: rows(out / name) for name in DERIVED}
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out, elsewhere)
    assert not out.exists()
    proc = subprocess.run([sys.executable, "-m", "harness", "analyse", str(elsewhere), "--out", str(elsewhere / "re")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, before in written.items():
        after = rows(elsewhere / "re" / name)
        assert len(after) == len(before) and (not before or list(after[0]) == list(before[0])), name
        for old, new in zip(before, after, strict=True):
            for key, value in old.items():
                try:
                    a, b = float(value), float(new[key])
                except ValueError:
                    assert new[key] == value, (name, key, value, new[key])
                    continue
                assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), \
                    (name, key, value, new[key])
    if restore:
        shutil.rmtree(elsewhere / "re")
        shutil.move(elsewhere, out)
