"""What a sweep folder holds, as the analysis reads it: sweep.yaml (the spec, its points and ids, the machine
and commit of every session), trials.csv (the index of finished trials) and trials/<id>/ (one run folder
each). `harness sweep` (harness.experiment.sweep) writes it; fit, optimise and report only read it.

sweep.yaml's shape is written here once (`SweepRecord` and its parts), for its writer and its readers alike.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NotRequired, TypedDict

from harness.errors import UserError
from harness.history.guarded import guard, read_yaml

TRIAL_ID_CHARS = "A-Za-z0-9_.,=+-"  # what a trial id (a folder under trials/) is made of: never a path
TRIAL_ID = re.compile(rf"[A-Za-z0-9][{TRIAL_ID_CHARS}]*", re.ASCII)

Settings = dict[str, object]
"""Config keys and their values as a spec gives them (YAML): a base, or the keys a point sets on top of it."""


class SpecRecord(TypedDict, total=False):
    """The sweep's spec as it was given (harness.experiment.sweep.spec checks every part before a trial runs)."""

    base: Settings
    grid: dict[str, list[object]]
    points: list[Settings]
    extra: list[Settings]
    repeat: int
    phases: list[float]
    load: str
    jobs: int | str
    description: str


class PointRecord(TypedDict):
    """One point of the sweep: its id (the folder name of its trials, less `-r<k>`) and the keys it sets."""

    id: str
    overrides: NotRequired[Settings]


class Exploration(TypedDict):
    """A point with `fault_at: every`: what it made of the crash points (faults.explore)."""

    overrides: Settings
    design: str
    phases: list[float]
    exhaustive_runs: int
    runs: int
    classes: list[list[str]]  # each class's crash points, as `fault_at` values (`task:K@F`)


class Machine(TypedDict, total=False):
    """The machine a session ran on (harness.experiment.provenance.machine)."""

    hostname: str
    kernel: str
    cpus: int | None
    memory_gib: float
    python: str
    platform: str


class Session(TypedDict, total=False):
    """One `harness sweep` that worked on the folder: its provenance and how it ran."""

    manobench: str
    commit: str
    machine: Machine
    started: str
    load: str
    jobs: int | str
    repeat: int
    argv: list[str]


class SweepRecord(TypedDict, total=False):
    """sweep.yaml: the spec, the points, the provenance of the sweep's first session and of every session."""

    spec_file: str | None
    spec: SpecRecord
    load: str
    repeat: int
    swept: list[str]  # every key a point sets, in first-seen order
    manobench: str
    commit: str
    machine: Machine
    started: str
    sessions: list[Session]
    points: list[PointRecord]
    exploration: list[Exploration]


def read_record(out: Path) -> SweepRecord:
    """sweep.yaml of the sweep folder `out`, or a one-line UserError when `out` is none."""
    path = Path(out) / "sweep.yaml"
    if not path.exists():
        raise UserError(f"{out} is not a sweep folder (no sweep.yaml): run `harness sweep SPEC --out {out}` first")
    record: SweepRecord = read_yaml(path)
    with guard(path):  # the parts every reader walks: a list of points, each a mapping with an id
        points = record.get("points") or []
        if not isinstance(points, list) or not all(isinstance(p, dict) and "id" in p for p in points):
            raise TypeError("points is not a list of points with ids")
        if not isinstance(record.get("spec") or {}, dict):
            raise TypeError("spec is not a mapping")
    return record
