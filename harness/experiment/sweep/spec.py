"""A sweep's spec: what it is made of and how it is checked, whole, before anything runs (`plan`).

A spec (YAML) names a `base` configuration and the points to run:

    base:   {key: value, ...}            # any config key (harness/plan/config.py), shared by every point
    grid:   {key: [v1, v2, ...], ...}     # cartesian product of the values
    points: [{key: value, ...}, ...]      # a list of points; crossed with the grid when both are given
    extra:  [{key: value, ...}, ...]      # further points run as given (not crossed): e.g. a calibration
                                          # point at another time_scale, which lets `harness fit` separate
                                          # the configured link latency from the per-message software cost
    repeat: R                             # runs per point (default 1; --repeat overrides)
    phases: [0, 0.25, 0.5, 0.75]          # fault_at: every: the heartbeat phases explored (faults.explore)
    load: builtin | locust                # the spec's own default load generator (--load overrides; default builtin)
    jobs: auto | J                        # the spec's own default concurrency (--jobs overrides; default auto)
    description: free text                # shown in the report

A point whose fault_at is `every` is an exploration: it becomes one point per class of crash points that cost
the same (faults/explore.py), each with fault_at `task:K@F`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from faults import explore
from harness import model
from harness.analysis.sweep_folder import TRIAL_ID_CHARS
from harness.errors import ConfigError, UserError
from harness.load import LOADS
from harness.plan import capacity, config
from harness.plan.config import Experiment
from harness.plan.target import TargetError, experiment_for

if TYPE_CHECKING:  # sweep.yaml's shape, written once where the analysis reads it
    from harness.analysis.sweep_folder import Exploration, Settings

SPEC_KEYS = ("base", "grid", "points", "extra", "repeat", "phases", "load", "jobs", "description")
RUN_KEYS = ("repeat", "load", "jobs", "description")  # how a sweep is run, not what it measures: may change on resume
TRIAL_COLUMNS = ["point", "repeat", "trial", "trial_seconds", "host_load"]


@dataclass
class Point:
    """One configuration of the sweep: its stable id, the keys it sets on top of the base, and z."""

    id: str
    overrides: Settings
    z: Experiment


@dataclass
class Trial:
    point: Point
    repeat: int

    @property
    def id(self) -> str:
        return f"{self.point.id}-r{self.repeat}"


@dataclass
class Plan:
    spec: dict[str, object]  # as read (read_spec), every part of it checked by `plan`
    base: Settings
    points: list[Point]
    repeat: int
    swept: list[str]  # every key a point sets, in first-seen order
    exploration: list[Exploration] = field(default_factory=list)  # fault_at: every, as sweep.yaml records it

    @property
    def trials(self) -> list[Trial]:
        """Repeat-major: every point once before any point twice, so a stopped sweep covers every point."""
        return [Trial(p, k) for k in range(1, self.repeat + 1) for p in self.points]

    @property
    def columns(self) -> list[str]:
        from harness.measure.summary import SUMMARY_COLUMNS

        extra = [k for k in self.swept if k not in SUMMARY_COLUMNS and k not in TRIAL_COLUMNS]
        return [*SUMMARY_COLUMNS, *TRIAL_COLUMNS, *extra]


# --- the spec ---------------------------------------------------------------------------------------------


def read_spec(path: str | Path) -> dict[str, object]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep spec: no such file: {path}")
    try:
        data = config.safe_load_unique(path.read_text(encoding="utf-8"))  # a key given twice is refused
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        detail = str(err).replace("\n", " ")
        raise UserError(f"sweep spec: {path} does not parse: {detail}") from None
    if not isinstance(data, dict):
        raise UserError(f"sweep spec: {path}: the top level must be a mapping (base, grid, points, extra, repeat)")
    return data


AUTO = "auto"


def parse_jobs(value: object, where: str) -> int | str:
    """`auto` or a whole number >= 1 (ASCII digits only when given as text)."""
    if isinstance(value, str) and value.strip() == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: expected auto or a whole number >= 1 (got {value!r})")
    return value


def run_defaults(spec: dict[str, object]) -> tuple[str | None, int | str | None]:
    """The spec's own `load` and `jobs` (None where it states none), checked."""
    load = spec.get("load")
    if load is not None and load not in LOADS:
        raise UserError(f"sweep spec: load: expected one of {', '.join(LOADS)} (got {load!r})")
    jobs = spec.get("jobs")
    return load, (None if jobs is None else parse_jobs(jobs, "sweep spec: jobs"))


def _known(key: str, where: str) -> None:
    if key not in Experiment.model_fields:
        raise UserError(f"sweep spec: {where}: unknown key '{key}' (known keys: {', '.join(Experiment.model_fields)})")


def _mapping(value: object, where: str) -> Settings:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"sweep spec: {where}: expected a mapping of key: value (got {value!r})")
    for key in value:
        _known(str(key), f"{where}.{key}")
    return dict(value)


def _mappings(value: object, where: str) -> list[Settings]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise UserError(f"sweep spec: {where}: expected a non-empty list of mappings (got {value!r})")
    return [_mapping(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _label(overrides: Settings) -> str:
    """Readable, filesystem-safe name of a point's overrides."""
    parts = []
    for key, value in overrides.items():
        text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
            else (f"{value:g}" if isinstance(value, float) else str(value))
        parts.append(text if key in ("design", "mechanism", "fault", "fault_at") else f"{key}{text}")
    slug = re.sub(rf"[^{TRIAL_ID_CHARS}]", "_", "-".join(parts))[:60] or "base"
    return slug


def point_id(overrides: Settings) -> str:
    """Stable across reruns and spec edits that keep the point: a slug plus a hash of its overrides."""
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{_label(overrides)}-{digest}"


def plan(spec: dict[str, object], repeat: int | None = None) -> Plan:
    """Validate the whole spec and every point it makes; the first problem is a UserError naming the key."""
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise UserError(f"sweep spec: unknown top-level key '{unknown[0]}' (known: {', '.join(SPEC_KEYS)})")
    run_defaults(spec)
    base = _mapping(spec.get("base"), "base")
    grid_in = spec.get("grid")
    if grid_in is not None and not isinstance(grid_in, dict):
        raise UserError(f"sweep spec: grid: expected a mapping of key: [values] (got {grid_in!r})")
    grid: dict[str, list[object]] = {}
    for key, values in (grid_in or {}).items():
        _known(str(key), f"grid.{key}")
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep spec: grid.{key}: expected a non-empty list of values (got {values!r})")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise UserError(f"sweep spec: grid.{key}: a value is listed twice ({values!r})")
        grid[str(key)] = values
    points_in = _mappings(spec.get("points"), "points")
    extra_in = _mappings(spec.get("extra"), "extra")
    for i, p in enumerate(points_in):
        both = [k for k in p if k in grid]
        if both:
            raise UserError(f"sweep spec: points[{i}].{both[0]}: also swept in grid (a point is crossed with the "
                            "grid; set it in one place)")
    given: object = spec.get("repeat", 1) if repeat is None else repeat
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise UserError(f"sweep spec: repeat: expected a whole number >= 1 (got {given!r})")
    repeat = given
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    crossed = [{**p, **c} for p in (points_in or [{}]) for c in combos]
    overrides_list = [*crossed, *extra_in]
    phases = _phases(spec.get("phases"))
    points: list[Point] = []
    seen: dict[str, int] = {}
    swept: list[str] = []
    exploration: list[Exploration] = []
    for index, overrides in enumerate(overrides_list):
        where = f"extra[{index - len(crossed)}]" if index >= len(crossed) else f"point {index + 1}"
        desc = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the base"
        z = _build(base, overrides, f"{where} ({desc})")
        _runnable(z, f"{where} ({desc})")
        expanded: list[tuple[Settings, Experiment | None]] = [(overrides, z)]
        if z.fault_at == "every":
            found = explore.classes(model, z, phases)
            expanded = [({**overrides, "fault_at": c[0].fault_at}, None) for c in found]
            exploration.append({"overrides": overrides, "design": z.design, "phases": list(phases),
                                "exhaustive_runs": explore.exhaustive_runs(z, phases), "runs": len(found),
                                "classes": [[p.fault_at for p in c] for c in found]})
        for over, built in expanded:
            pid = point_id(over)
            if pid in seen:
                raise UserError(f"sweep spec: {where} ({desc}) is the same point as point {seen[pid] + 1}")
            seen[pid] = index
            point = Point(pid, over, built or _build(base, over, f"{where} ({desc})"))
            try:  # what this machine can run, for every point before the first trial starts
                capacity.check_run(point.z)
            except ConfigError as err:
                raise UserError(f"sweep spec: {where} ({desc}): {str(err).removeprefix('config error: ')}") from None
            points.append(point)
            swept += [k for k in over if k not in swept]
    return Plan(spec, base, points, repeat, swept, exploration)


def _build(base: Settings, overrides: Settings, where: str) -> Experiment:
    """A point's z; with a target file, merged with the file's own z once, here, while what the spec gave is
    still told apart from the defaults (harness.plan.target.experiment_for), and checked like a run's."""
    try:
        return experiment_for(config.build(config.apply_overrides(base, list(overrides.items()))))[0]
    except ConfigError as err:
        raise UserError(f"sweep spec: {where}: {str(err).removeprefix('config error: ')}") from None
    except TargetError as err:
        raise UserError(f"sweep spec: {where}: {err}") from None


def _phases(value: object) -> tuple[float, ...]:
    """The spec's `phases` (heartbeat intervals, each in [0, 1)), or explore.PHASES."""
    if value is None:
        return explore.PHASES
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1 for v in value) \
            or len(set(value)) != len(value):
        raise UserError(f"sweep spec: phases: expected a list of distinct numbers 0 <= F < 1 (got {value!r})")
    return tuple(float(v) for v in value)


def _runnable(z: Experiment, where: str) -> None:
    """What `harness run` would refuse only once it had started: a runtime that is not there, a link backend
    the runtime cannot carry. Asked once per (runtime, link_backend) of the spec: the probes run tc or ask
    the Docker Engine."""
    problem = _runtime_problem(z.runtime, z.link_backend)
    if problem:
        raise UserError(f"sweep spec: {where}: {problem}")


@functools.cache
def _runtime_problem(runtime: str, link_backend: str) -> str:
    """Why trials of this runtime and link backend cannot run here, or "". Every runtime in the config's
    registry runs sweeps with the same files (a trial is `harness run` in a child process); netem needs a
    network namespace per service, which `select_backend` knows the runtimes for."""
    from harness.links.wiring import select_backend

    if runtime == "docker":
        from harness.runtime import image

        works, why = image.available()
        if not works:
            return f"runtime: docker: no Docker Engine answers here ({why})"
    try:
        select_backend(link_backend, runtime)
    except UserError as err:
        return str(err)
    return ""

