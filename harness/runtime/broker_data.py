"""The local brokers' data directories, under the harness's own state root, and how to tell a broker's
processes: the one place that makes, records and removes those directories.

Its own module (importing no runtime) because `harness.runtime.leftovers` removes the data of the runs it
ends, and the local broker makes it: neither imports the other for it.

A data directory is recorded (`<name>.json` beside `<name>/`: who made it, for which run) before it is made,
so a harness killed in between leaves a record, never an unrecorded directory. Only a recorded directory
directly under the root, not itself a symlink, is ever removed; a path read from a process's environment
(BROKER_DATA_ENV) only tells which processes are one broker's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import TypedDict

import psutil

from harness.runtime.broker_node import BROKER_DATA_ENV
from harness.state import state_dir, write_json_atomic

RECORD_SUFFIX = ".json"  # <name>.json beside <name>/: who made the directory, for which run


class DataRecord(TypedDict, total=False):
    """A data directory's record, as written by `record` and read back by `records` (only `run` is relied
    on: a record missing it is skipped)."""

    run: str
    owner: str  # the harness's pid: a dead owner means nobody can use the directory any more
    session: str
    made: float  # wall seconds


def data_root() -> Path:
    """Where the local brokers' data directories live: the harness's state root (0700, ours), never /tmp."""
    return state_dir("brokers")


def new_data(run: str) -> Path:
    """A fresh data directory's path for a broker of `run` (made by the broker's start, after `record`)."""
    return data_root() / f"{_token(run)}-{os.getpid()}-{os.urandom(3).hex()}"


def _token(run: str) -> str:
    """A run id as a safe file name (run ids are hex; tests name their runs freely)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", run)[:40] or "run"


def record(data: Path, run: str, owner: str) -> None:
    """Record a data directory before it is made, so a harness killed in between leaves a record (removable),
    never an unrecorded directory."""
    made: DataRecord = {"run": run, "owner": owner, "session": os.environ.get("MANOBENCH_SESSION", ""),
                        "made": time.time()}
    write_json_atomic(data.with_name(data.name + RECORD_SUFFIX), dict(made))


def records() -> list[tuple[Path, DataRecord]]:
    """(data directory, record) of every well-formed record under the root. A malformed record (not JSON, not
    an object, no run) is skipped: nothing is removed on its word."""
    root = data_root()
    found: list[tuple[Path, DataRecord]] = []
    for path in sorted(root.glob(f"*{RECORD_SUFFIX}")):
        try:
            read = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(read, dict) and isinstance(read.get("run"), str):
            found.append((root / path.name[:-len(RECORD_SUFFIX)],
                          DataRecord(run=read["run"], owner=str(read.get("owner", "")))))
    return found


def remove_data(runs: set[str]) -> list[Path]:
    """Remove the recorded data directories of these runs (their brokers were ended); returns what went.

    Only a directory recorded under the root, named by its record (never a path from anyone's environment),
    lying directly in the root once resolved and not itself a symlink; rmtree does not follow links inside."""
    gone = []
    for data, made in records():
        if made["run"] in runs and remove(data):
            gone.append(data)
    return gone


def remove(data: Path) -> bool:
    """Remove one of our data directories and its record; False (nothing touched) for anything else."""
    if data.name in ("", ".", "..") or data.parent.resolve() != data_root().resolve():
        return False  # one name directly in the root: nothing elsewhere, whatever the path was
    try:
        info = data.lstat()
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False  # a symlink or anything not ours: never followed, never removed
        shutil.rmtree(data, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        data.with_name(data.name + RECORD_SUFFIX).unlink()
    return True


def of_broker(procs: list[psutil.Process], data: Path | None = None) -> list[psutil.Process]:
    """The processes of a broker (of the one whose data directory is `data`): their environment names it."""
    return [p for p in procs if broker_data(p) and (data is None or broker_data(p) == str(data))]


def broker_data(proc: psutil.Process) -> str:
    """The data directory a broker process was started on, or ""."""
    try:
        return proc.environ().get(BROKER_DATA_ENV, "")
    except (psutil.Error, OSError):
        return ""
