"""A sweep: many experiments z, each run R times, into one folder that can be stopped and resumed.

A spec (YAML) names a `base` configuration and the points to run:

    base:   {key: value, ...}            # any config key (harness/plan/config.py), shared by every point
    grid:   {key: [v1, v2, ...], ...}     # cartesian product of the values
    points: [{key: value, ...}, ...]      # a list of points; crossed with the grid when both are given
    extra:  [{key: value, ...}, ...]      # further points run as given (not crossed): e.g. a calibration
                                          # point at another time_scale, which lets `harness fit` separate
                                          # the configured link latency from the per-message software cost
    repeat: R                             # runs per point (default 1; --repeat overrides)
    phases: [0, 0.25, 0.5, 0.75]          # fault_at: every: the heartbeat phases explored (harness.faults.explore)
    description: free text                # shown in the report

A point whose fault_at is `every` is an exploration: it becomes one point per class of crash points that cost
the same (harness/faults/explore.py), each with fault_at `task:K@F`; sweep.yaml's `exploration` records, per
explored point, the classes, the runs used and the runs an exhaustive search would need.

Every point is validated (it must build a valid Experiment) before anything runs. Each trial (point, k) runs
`harness.experiment.run.experiment` in its own child process (own loopback block, own teardown) into
DIR/trials/<point>-r<k>/ on the runtime its z names (`runtime: docker` in `base` runs the whole sweep in
containers, with the same files), and once it has finished its summary row is appended to DIR/trials.csv. A trial
counts as finished only once that row is written: rerunning the same command skips those, removes any
half-done trial folder and runs it again. DIR/sweep.yaml holds the spec, the points and the machine/commit
of every session that worked on the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, UserError
from harness.experiment import provenance
from harness.faults import explore
from harness.plan import config
from harness.plan.config import Experiment
from harness.runtime import forkserver
from harness.runtime.forkserver import Forked, ForkServer

SPEC_KEYS = ("base", "grid", "points", "extra", "repeat", "phases", "description")
TRIAL_COLUMNS = ["point", "repeat", "trial", "trial_seconds", "host_load"]
LOADS = ("locust", "builtin")
TRIAL_MODULE = "harness.experiment.sweep"  # `python -m harness.experiment.sweep trial DIR PARENT` runs one trial
TRIAL_PRELOAD = "harness.experiment.run"  # what a trial imports: the fork server imports it once per sweep


@dataclass
class Point:
    """One configuration of the sweep: its stable id, the keys it sets on top of the base, and z."""

    id: str
    overrides: dict[str, Any]
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
    spec: dict[str, Any]
    base: dict[str, Any]
    points: list[Point]
    repeat: int
    swept: list[str]  # every key a point sets, in first-seen order
    exploration: list[dict[str, Any]] = field(default_factory=list)  # fault_at: every, as sweep.yaml records it

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


def read_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep spec: no such file: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        detail = str(err).replace("\n", " ")
        raise UserError(f"sweep spec: {path} does not parse: {detail}") from None
    if not isinstance(data, dict):
        raise UserError(f"sweep spec: {path}: the top level must be a mapping (base, grid, points, extra, repeat)")
    return data


def _known(key: str, where: str) -> None:
    if key not in Experiment.model_fields:
        raise UserError(f"sweep spec: {where}: unknown key '{key}' (known keys: {', '.join(Experiment.model_fields)})")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"sweep spec: {where}: expected a mapping of key: value (got {value!r})")
    for key in value:
        _known(str(key), f"{where}.{key}")
    return dict(value)


def _mappings(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise UserError(f"sweep spec: {where}: expected a non-empty list of mappings (got {value!r})")
    return [_mapping(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _label(overrides: dict[str, Any]) -> str:
    """Readable, filesystem-safe name of a point's overrides."""
    parts = []
    for key, value in overrides.items():
        text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
            else (f"{value:g}" if isinstance(value, float) else str(value))
        parts.append(text if key in ("design", "mechanism", "fault", "fault_at") else f"{key}{text}")
    slug = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", "-".join(parts))[:60] or "base"
    return slug


def point_id(overrides: dict[str, Any]) -> str:
    """Stable across reruns and spec edits that keep the point: a slug plus a hash of its overrides."""
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{_label(overrides)}-{digest}"


def plan(spec: dict[str, Any], repeat: int | None = None) -> Plan:
    """Validate the whole spec and every point it makes; the first problem is a UserError naming the key."""
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise UserError(f"sweep spec: unknown top-level key '{unknown[0]}' (known: {', '.join(SPEC_KEYS)})")
    base = _mapping(spec.get("base"), "base")
    grid_in = spec.get("grid")
    if grid_in is not None and not isinstance(grid_in, dict):
        raise UserError(f"sweep spec: grid: expected a mapping of key: [values] (got {grid_in!r})")
    grid: dict[str, list[Any]] = {}
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
    if repeat is None:
        repeat = spec.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise UserError(f"sweep spec: repeat: expected a whole number >= 1 (got {repeat!r})")
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    crossed = [{**p, **c} for p in (points_in or [{}]) for c in combos]
    overrides_list = [*crossed, *extra_in]
    phases = _phases(spec.get("phases"))
    points: list[Point] = []
    seen: dict[str, int] = {}
    swept: list[str] = []
    exploration: list[dict[str, Any]] = []
    for index, overrides in enumerate(overrides_list):
        where = f"extra[{index - len(crossed)}]" if index >= len(crossed) else f"point {index + 1}"
        desc = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the base"
        z = _build(base, overrides, f"{where} ({desc})")
        _runnable(z, f"{where} ({desc})")
        expanded: list[tuple[dict[str, Any], Experiment | None]] = [(overrides, z)]
        if z.fault_at == "every":
            found = explore.classes(z, phases)
            expanded = [({**overrides, "fault_at": c[0].fault_at}, None) for c in found]
            exploration.append({"overrides": overrides, "design": z.design, "phases": list(phases),
                                "exhaustive_runs": explore.exhaustive_runs(z, phases), "runs": len(found),
                                "classes": [[p.fault_at for p in c] for c in found]})
        for over, built in expanded:
            pid = point_id(over)
            if pid in seen:
                raise UserError(f"sweep spec: {where} ({desc}) is the same point as point {seen[pid] + 1}")
            seen[pid] = index
            points.append(Point(pid, over, built or _build(base, over, f"{where} ({desc})")))
            swept += [k for k in over if k not in swept]
    return Plan(spec, base, points, repeat, swept, exploration)


def _build(base: dict[str, Any], overrides: dict[str, Any], where: str) -> Experiment:
    try:
        return config.build(config.apply_overrides(base, list(overrides.items())))
    except ConfigError as err:
        raise UserError(f"sweep spec: {where}: {str(err).removeprefix('config error: ')}") from None


def _phases(value: Any) -> tuple[float, ...]:
    """The spec's `phases` (heartbeat intervals, each in [0, 1)), or explore.PHASES."""
    if value is None:
        return explore.PHASES
    ok = isinstance(value, list) and value and all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1 for v in value)
    if not ok or len(set(value)) != len(value):
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


# --- the folder ---------------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of trials.csv, every cell as written; a torn last line (a sweep killed while appending) is not
    a row."""
    from harness.analysis import tables  # pandas: not imported by the trial processes, which need none of it

    frame = tables.read_csv(path, text=True)
    if "trial" not in frame:
        return []
    return frame[frame["trial"] != ""].to_dict("records")  # type: ignore[return-value]


class TrialsCsv:
    """DIR/trials.csv: appended a row at a time, each flushed to disk before the trial counts as finished."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        from harness.analysis import tables

        self.path, self.columns = path, columns
        if path.exists():
            if list(tables.read_csv(path, text=True).columns) != columns:
                raise UserError(f"{path} has other columns than this sweep writes: it belongs to another sweep "
                                "(use another --out)")
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):  # torn last line: cut it off
                path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
        else:
            path.write_text(",".join(columns) + "\n", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        from harness.analysis import tables

        line = tables.csv_line({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()},
                               self.columns)
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _comparable(spec: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in ("repeat", "description")}, sort_keys=True,
                      default=str)


def prepare(out: Path, plan_: Plan, spec_file: str | None, load: str) -> dict[str, Any]:
    """Create or reopen DIR; refuse a folder that holds a different sweep. Returns sweep.yaml's record."""
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "sweep.yaml"
    session = {**provenance.stamp(), "load": load, "repeat": plan_.repeat, "argv": sys.argv[1:]}
    if record_path.exists():
        try:
            record = yaml.safe_load(record_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            record = {}
        if _comparable(record.get("spec", {})) != _comparable(plan_.spec):
            raise UserError(f"{out} holds another sweep (its spec differs from this one): use another --out, or the "
                            "spec it was started with")
        if record.get("load", load) != load:
            raise UserError(f"{out} was started with --load {record.get('load')}: resume it with the same --load")
        record["repeat"] = max(plan_.repeat, int(record.get("repeat", 1)))
        record.setdefault("sessions", []).append(session)
    else:
        record = {"spec_file": spec_file, "spec": plan_.spec, "load": load, "repeat": plan_.repeat,
                  "swept": plan_.swept, **provenance.stamp(), "sessions": [session]}
    record["points"] = [{"id": p.id, "overrides": p.overrides} for p in plan_.points]
    if plan_.exploration:
        record["exploration"] = plan_.exploration
    tmp = record_path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    tmp.replace(record_path)
    return record


# --- one trial, in a child process --------------------------------------------------------------------------


def _pid_alive_child(pid: int) -> bool:
    """Whether pid still runs a trial of a sweep (not a recycled pid)."""
    try:
        import psutil

        cmd = " ".join(psutil.Process(pid).cmdline())
    except Exception:
        return False
    return "harness.experiment.sweep" in cmd and ("trial" in cmd or "forkserver" in cmd)  # forked: the server's


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


def _die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG: SIGINT when the sweep dies (even SIGKILLed), so the run tears down in order."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:
        raise SystemExit(130)


def trial_main(argv: list[str]) -> None:
    """`python -m harness.experiment.sweep trial DIR PARENT_PID`: run DIR/trial.json's experiment into DIR."""
    trial_dir, parent = Path(argv[0]), int(argv[1])
    _die_with_parent(parent)
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


# --- the sweep ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    finished: int = 0  # rows in trials.csv for this plan, at the end
    ran: int = 0  # finished in this session
    skipped: int = 0  # already finished before this session
    failed: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0


def expected_seconds(z: Experiment) -> float:
    """A generous guess of a trial's wall time: start-up, the workflows, the recovery and the tail."""
    from harness import model

    m = model.evaluate(z)
    assert z.t_h is not None
    rounds = z.requests / z.rate / (m.t_c * z.time_scale) + 1 if z.rate else math.ceil(z.requests / z.users)
    lost = m.t_l if math.isfinite(m.t_l) and z.fault != "none" else 0.0
    monolith = m.t_m * math.ceil(min(z.requests, 2 * z.users) / z.users)  # its reference, once per sweep
    return 5 + 0.6 * z.n + z.time_scale * (rounds * m.t_c + lost + 3 * z.t_h + 2 * monolith)


def trial_timeout(z: Experiment) -> float:
    """After this long a trial is stopped and counted as failed (a hung deployment must not hang the sweep)."""
    return 120 + 5 * expected_seconds(z)


CPU_CAP_ENV = "MANOBENCH_SWEEP_CPU"  # the share of the host's cores concurrent trials may fill (default CPU_CAP)
CPU_CAP = 0.9
ADMIT_GAP = 0.5  # wall seconds between one sweep's admissions (what a trial needs is reserved from the start)
LOCK = Path("/tmp/manobench-sweep-admission.lock")  # one admission decision at a time on the machine
BOARD = Path("/tmp/manobench-sweep-admission.d")  # each sweep's running trials, what they reserve, what waits
STARTUP_NICE = 10  # a concurrent trial starts at this nice value, and is reniced to 0 once its deployment is up
HEAVY = 0.9  # cores: a trial expected to need more keeps room for itself while it waits (Headroom)
WINDOW = 3.0  # wall seconds over which a running trial's CPU rate is measured
# what a trial of a point not yet measured is expected to need at its busiest (cores): a base plus its
# heartbeats (sent and received) a wall second as the model counts them (harness.model.compute.activity),
# fitted to the trials of fig6/7/8.yaml on this 2-core host (docs/analysis.md, "Speed"), times PRIOR_PEAK
PRIOR_BASE, PRIOR_PER_HEARTBEAT, PRIOR_PEAK = 0.15, 0.0013, 1.4


def prior_need(z: Experiment) -> float:
    """Cores a trial of z is expected to need at its busiest, before any trial of its point was measured."""
    from harness import model
    from harness.model import compute

    rate = 0.0
    if z.design != "monolith":
        m = model.evaluate(z)
        t_r = m.t_r if math.isfinite(m.t_r) else m.t_c
        act = compute.activity(z, m.t_c, t_r)
        rate = act.heartbeats / act.window if act.window > 0 else 0.0
    return PRIOR_PEAK * (PRIOR_BASE + PRIOR_PER_HEARTBEAT * rate)


@dataclass
class Watched:
    """A running trial as the admission sees it: its process, its point, what it reserves, its CPU so far."""

    pid: int
    point: str
    need: float  # cores it is expected to need at its busiest
    ready: bool = False  # its deployment is up: its CPU rate is measured from then on (not the start-up burst)
    mark: tuple[float, float] | None = None  # (monotonic time, tree CPU seconds) at the start of the window
    rate: float | None = None  # cores over its latest window (None: none measured yet)

    @property
    def reserved(self) -> float:
        """Cores held for it beyond what the host's CPU use already shows of it: all of its need until its CPU
        was first measured (its start-up has not shown in the host's use yet); then, for a heavy trial, what
        its busiest moments may add to its latest rate; a light one's use is in the host's use."""
        if self.rate is None:
            return self.need
        return max(0.0, self.need - self.rate) if self.need >= HEAVY else 0.0


class Headroom:
    """Admits concurrent trials by measured CPU headroom, machine-wide.

    What a trial needs (cores) is what it used at its busiest: the highest CPU rate (over WINDOW s, its process
    tree, from its deployment's `ready` on) measured so far on any trial of its point, or, before one was
    measured, `prior_need` from the model. A trial is admitted while the host's CPU use (every process on it,
    other users' included, smoothed over a few seconds), plus what the running trials hold reserved beyond it
    (every sweep's, from BOARD: `Watched.reserved`: a trial's whole need until its CPU shows in the host's use,
    and a heavy one's busiest moments beyond its latest rate), plus what it needs, stays within `cap` of the
    cores. A heavy trial (need >= HEAVY cores) that does not fit keeps its need reserved while it waits, so the
    lighter trials admitted meanwhile leave it room, and it starts once the host has drained to it (alone, if
    it needs the whole cap) instead of sharing a saturated host; the first trial on the machine is always
    admitted. One decision at a time on the machine (an flock on LOCK), each sweep's admissions ADMIT_GAP
    apart."""

    def __init__(self, cap: float | None = None, board: Path | None = None) -> None:
        import psutil

        self.psutil = psutil
        env = os.environ.get(CPU_CAP_ENV)
        self.cap = cap if cap is not None else float(env) if env else CPU_CAP
        self.cores = psutil.cpu_count() or 1
        self.busy = 0.0  # cores, smoothed
        psutil.cpu_percent(interval=None)
        self.peaks: dict[str, float] = {}  # point -> highest CPU rate measured on its trials (cores)
        self.priors: dict[str, float] = {}
        self.watched: dict[str, Watched] = {}  # trial id -> the running trial
        self.waiting = 0.0  # the need of this sweep's heavy trial that waits for room (0: none)
        self.pending = 0.0  # the need of the trial admitted and not yet started
        self.last_admit = -math.inf
        self.sampled = False
        self.why = ""  # what held the latest refused admission back: gap, cpu, lock
        self.board = board or BOARD
        self.mine = self.board / f"{os.getpid()}.json"
        self.published = ""

    def sample(self) -> float:
        """The host's CPU use in cores since the previous sample, smoothed (time constant ~1.5 s at 0.5 s a
        sample); and each ready trial's CPU rate over its latest window."""
        now = self.psutil.cpu_percent(interval=None) / 100 * self.cores
        self.busy = 0.7 * self.busy + 0.3 * now if self.sampled else now
        self.sampled = True
        t = time.monotonic()
        for w in self.watched.values():
            if not w.ready or (w.mark and t - w.mark[0] < WINDOW):
                continue
            cpu = self.tree_cpu(w.pid)
            if w.mark and cpu is not None:
                rate = max(0.0, cpu - w.mark[1]) / (t - w.mark[0])
                self.peaks[w.point] = max(self.peaks.get(w.point, 0.0), rate)
                w.need, w.rate = max(w.need, rate), rate
            w.mark = (t, cpu) if cpu is not None else None
        if self.watched:
            self.publish()  # what its trials hold reserved changes as their CPU is measured
        return self.busy

    def tree_cpu(self, pid: int) -> float | None:
        """CPU seconds of the trial process and its descendants (live, and those they reaped)."""
        try:
            proc = self.psutil.Process(pid)
            return sum(sum(p.cpu_times()[:4]) for p in [proc, *proc.children(recursive=True)])
        except self.psutil.Error:
            return None

    def need(self, point: Point) -> float:
        """Cores a trial of this point is expected to need at its busiest: measured if any was, else the prior.
        Container runtimes' services are the Engine's children, not the trial's: their prior is used."""
        if point.id in self.peaks and point.z.runtime == "local":
            return self.peaks[point.id]
        if point.id not in self.priors:
            self.priors[point.id] = prior_need(point.z)
        return self.priors[point.id]

    def heavy(self, point: Point) -> bool:
        return self.need(point) >= HEAVY

    def _board(self) -> tuple[float, float, int]:
        """Other sweeps' (reserved cores, largest waiting need, running trials), from BOARD; a dead sweep's
        entry is removed."""
        reserved, waiting, count = 0.0, 0.0, 0
        with contextlib.suppress(OSError):
            for path in self.board.glob("*.json"):
                if path == self.mine:
                    continue
                try:
                    entry = json.loads(path.read_text())
                    alive = self.psutil.pid_exists(int(entry["pid"]))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if not alive:
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                reserved += float(entry.get("reserved", 0.0))
                waiting = max(waiting, float(entry.get("waiting", 0.0)))
                count += int(entry.get("running", 0))
        return reserved, waiting, count

    def publish(self) -> None:
        """This sweep's running trials' reservations and its waiting heavy trial, for the other sweeps."""
        held = [w.reserved for w in self.watched.values()] + ([self.pending] if self.pending else [])
        text = json.dumps({"pid": os.getpid(), "running": len(held), "reserved": round(sum(held), 3),
                           "waiting": round(self.waiting, 3)})
        if text == self.published:
            return
        with contextlib.suppress(OSError):
            self.board.mkdir(parents=True, exist_ok=True)
            tmp = self.mine.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.mine)
            self.published = text

    def admit(self, point: Point) -> bool:
        """Whether one more trial of `point` fits now (module docstring); `why` says what held it back."""
        self.why = ""
        if self.watched and time.monotonic() - self.last_admit < ADMIT_GAP:
            self.why = "gap"
            return False
        fd = self._lock()
        if fd is None:
            self.why = "lock"
            return False
        try:
            others, waiting, count = self._board()
            need = self.need(point)
            heavy = need >= HEAVY
            if not heavy:
                waiting = max(waiting, self.waiting)  # room kept for a heavy trial that waits
            reserved = others + sum(w.reserved for w in self.watched.values()) + self.pending
            fits = self.busy + reserved + need + waiting <= self.cap * self.cores
            if not fits and (self.watched or count):
                self.why = "cpu"
                if heavy:
                    self.waiting = max(self.waiting, need)
                    self.publish()
                return False
            if heavy:
                self.waiting = 0.0
            self.pending = need  # reserved before the lock drops: the next decision, any sweep's, sees it
            self.publish()
            return True
        finally:
            os.close(fd)  # drops the flock; the caller publishes the admitted trial before the next decision

    def _lock(self) -> int | None:
        """flock LOCK (None: it could not be had). Another sweep holds it only for the milliseconds of one
        decision, so this waits for it."""
        import fcntl

        try:
            fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return os.open(os.devnull, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            return None
        return fd

    def admitted(self, trial_id: str, point: Point, pid: int) -> None:
        self.last_admit = time.monotonic()
        self.watched[trial_id] = Watched(pid, point.id, self.pending or self.need(point))
        self.pending = 0.0
        self.publish()

    def ready(self, trial_id: str) -> None:
        """The trial's deployment is up: measure its CPU rate from now on."""
        if trial_id in self.watched:
            self.watched[trial_id].ready = True

    def done(self, trial_id: str) -> None:
        self.watched.pop(trial_id, None)
        self.publish()

    def release(self) -> None:
        """The sweep ends: its entry leaves the board."""
        with contextlib.suppress(OSError):
            self.mine.unlink()


def monolith_cache_file(z: Experiment, cache: Path) -> Path:
    from harness.experiment.run import monolith_key

    return cache / f"monolith-{monolith_key(z)}.json"


class Profile:
    """Where a sweep's wall time went: seconds in each admission state (while trials waited to start: `gap`,
    `cpu`, `lock`, `monolith`, `jobs`; `drained` once none waited), the mean number of trials running, and
    every admission (seconds since the start, trial, trials running, the host's smoothed busy cores and the
    need it was admitted with). Written to DIR/admission.json when the sweep ends (benchmarks/bench_sweep.py
    prints it)."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.state = "jobs"
        self.seconds: dict[str, float] = {}
        self.trial_seconds = 0.0  # integral of the trials running over wall time
        self.admissions: list[list[Any]] = []
        self.trace: list[list[Any]] = []  # every 2 s: seconds, trials running, the host's busy cores (smoothed)

    def tick(self, running: int, busy: float | None = None) -> None:
        now = time.monotonic()
        if busy is not None and (not self.trace or now - self.start - self.trace[-1][0] >= 2):
            self.trace.append([round(now - self.start, 1), running, round(busy, 2)])
        self.seconds[self.state] = self.seconds.get(self.state, 0.0) + now - self.last
        self.trial_seconds += running * (now - self.last)
        self.last = now

    def admitted(self, trial: str, running: int, headroom: Headroom | None) -> None:
        busy = round(headroom.busy, 3) if headroom else None
        self.admissions.append([round(time.monotonic() - self.start, 2), trial, running, busy])

    def write(self, path: Path, headroom: Headroom | None) -> None:
        wall = max(1e-9, self.last - self.start)
        peaks = {k: round(v, 3) for k, v in headroom.peaks.items()} if headroom else {}
        path.write_text(json.dumps({"wall": round(wall, 2), "seconds": {k: round(v, 2) for k, v in
                                    self.seconds.items()}, "mean_running": round(self.trial_seconds / wall, 3),
                                    "peaks": peaks, "admissions": self.admissions, "trace": self.trace}, indent=0))


class Runner:
    """Runs the unfinished trials of a plan, up to `jobs` at a time, each in a child process."""

    def __init__(self, out: Path, plan_: Plan, load: str, jobs: int,
                 on_update: Callable[[float, int, int], None] | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.out, self.plan, self.load, self.jobs = out, plan_, load, jobs
        self.cache = out / ".cache"
        self.on_update = on_update or (lambda *_: None)
        self.say = say
        self.csv = TrialsCsv(out / "trials.csv", plan_.columns)
        self.done_ids = {r["trial"] for r in read_rows(out / "trials.csv")}
        self.outcome = Outcome()
        self.running: dict[asyncio.Task, tuple[Trial, float]] = {}
        self.procs: dict[str, asyncio.subprocess.Process | Forked] = {}
        self.forkserver: ForkServer | None = None  # forks the trial processes (harness.runtime.forkserver)
        self.computing: set[Path] = set()  # monolith references a running trial is measuring
        self.references: dict[str, Path] = {}  # point -> its monolith reference file
        self.interrupts = 0
        self.stopped: dict[str, int] = {}  # trial -> signals sent because it ran past its time-out
        self.headroom = Headroom() if jobs > 1 else None
        self.starting: dict[str, int] = {}  # trial -> bytes of its events.jsonl read while it starts, niced
        self.profile = Profile()

    def todo(self) -> list[Trial]:
        """The unfinished trials, repeat-major; when trials run side by side, each repeat's longest first (by
        `expected_seconds`), so the sweep does not end on a long trial running alone (Fig 8's calibration
        points, 95 s, did: a 60 s tail at 0.2 cores)."""
        todo = [t for t in self.plan.trials if t.id not in self.done_ids]
        if self.jobs > 1:
            length = {p.id: expected_seconds(p.z) for p in self.plan.points}
            todo.sort(key=lambda t: (t.repeat, -length[t.point.id]))
        return todo

    def _candidates(self, queue: list[Trial]) -> list[Trial]:
        """The trials that may start now, in order: those that do not wait for a monolith reference another
        running trial is measuring (two trials measuring the same one at once would race on its cache file)."""
        free = []
        for trial in queue:
            ref = self._reference(trial)
            if ref not in self.computing or ref.exists():
                free.append(trial)
        return free or (queue[:1] if not self.running else [])

    def _reference(self, trial: Trial) -> Path:
        """The monolith reference file of a trial's point (worked out once per point: about 1 ms each, and the
        whole queue is looked through twice a second)."""
        if trial.point.id not in self.references:
            self.references[trial.point.id] = monolith_cache_file(trial.point.z, self.cache)
        return self.references[trial.point.id]

    def _pick(self, queue: list[Trial]) -> Trial | None:
        """The next trial to start, or None (`profile.state` says why). Without a headroom (one job), the
        first candidate; with one, the first that the headroom admits, where a heavy trial that does not fit
        yet lets the lighter ones behind it be tried (it keeps its room reserved: Headroom)."""
        candidates = self._candidates(queue)
        if not candidates:
            self.profile.state = "monolith"
            return None
        for trial in candidates:
            if self.headroom is None or self.headroom.admit(trial.point):
                queue.remove(trial)
                return trial
            self.profile.state = self.headroom.why
            if self.headroom.why != "cpu" or not self.headroom.heavy(trial.point):
                return None
        return None

    async def _start(self, trial: Trial) -> asyncio.subprocess.Process | Forked:
        tdir = self.out / "trials" / trial.id
        if tdir.exists():
            await asyncio.to_thread(clear_trial_dir, tdir)
        tdir.mkdir(parents=True)
        ref = self._reference(trial)
        if not ref.exists():
            self.computing.add(ref)
        (tdir / "trial.json").write_text(json.dumps(
            {"z": trial.point.z.resolved(), "load": self.load, "cache": str(self.cache.resolve()),
             "point": trial.point.id, "repeat": trial.repeat, "overrides": trial.point.overrides}, indent=1))
        nice = STARTUP_NICE if self.headroom and self.running else 0
        if self.headroom:
            self.starting[trial.id] = 0  # until its `ready`: then reniced to 0, and its CPU rate measured
        proc: asyncio.subprocess.Process | Forked
        if self.forkserver is not None:
            proc = await self.forkserver.spawn(trial.id, {}, tdir / "trial.log", nice=nice,
                                               args=["trial", str(tdir), str(self.forkserver.pid)])
        else:
            log = (tdir / "trial.log").open("ab")
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", TRIAL_MODULE, "trial", str(tdir), str(os.getpid()),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    preexec_fn=(lambda: os.nice(nice)) if nice else None)
            finally:
                log.close()
        self.procs[trial.id] = proc
        return proc

    def _renice_started(self) -> None:
        """A concurrent trial starts niced, so that its services' start-up (a burst of interpreters importing:
        about 0.45 CPU s each) takes CPU from the running trials' measured load only where the host has it to
        spare; once its deployment is up (the `ready` event in its history) its whole process tree goes back
        to nice 0, before it settles, warms up and is measured, and the headroom measures its CPU rate from
        then on. Lowering a nice value needs root (CAP_SYS_NICE); without it the trial stays niced, which every
        concurrent trial then is alike."""
        import psutil

        for trial_id, offset in list(self.starting.items()):
            path = self.out / "trials" / trial_id / "events.jsonl"
            try:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except OSError:
                continue
            self.starting[trial_id] = offset + chunk.rfind(b"\n") + 1
            if b'"kind": "ready"' not in chunk and b'"kind":"ready"' not in chunk:
                continue
            del self.starting[trial_id]
            if self.headroom:
                self.headroom.ready(trial_id)
            proc = self.procs.get(trial_id)
            with contextlib.suppress(psutil.Error, OSError):
                root = psutil.Process(proc.pid) if proc else None
                for p in [root, *root.children(recursive=True)] if root else []:
                    with contextlib.suppress(psutil.Error, OSError):
                        p.nice(0)

    def _progress(self, base: int) -> float:
        """Finished trials plus the fraction of workflows the running ones have completed."""
        frac = 0.0
        for trial, _ in self.running.values():
            path = self.out / "trials" / trial.id / "requests.csv"
            with contextlib.suppress(OSError):
                lines = path.read_text(encoding="utf-8").count("\n") - 1
                frac += 0.9 * min(1.0, max(0, lines) / max(1, trial.point.z.requests))
        return base + frac

    def _record(self, trial: Trial, seconds: float) -> dict[str, Any] | None:
        from harness.analysis import tables

        rows: list[dict[str, Any]] = tables.read_csv(self.out / "trials" / trial.id / "summary.csv",  # type: ignore[assignment]
                                                     text=True).to_dict("records")
        if not rows:
            return None
        row: dict[str, Any] = {**rows[0], "point": trial.point.id, "repeat": trial.repeat, "trial": trial.id,
                               "trial_seconds": round(seconds, 3), "host_load": round(os.getloadavg()[0], 2)}
        for key, value in trial.point.overrides.items():
            row.setdefault(key, value)  # a swept key that is no summary column (t_h_mult, t_m, l_a, ...)
        self.csv.append(row)
        self.done_ids.add(trial.id)
        return row

    def _enforce_timeouts(self) -> None:
        """SIGINT a trial that ran past its time-out, SIGKILL it 30 s later."""
        now = time.monotonic()
        for trial, t0 in self.running.values():
            limit = trial_timeout(trial.point.z)
            sent = self.stopped.get(trial.id, 0)
            proc = self.procs.get(trial.id)
            if proc is None or now - t0 < limit + 30 * sent:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT if sent == 0 else signal.SIGKILL)
            self.stopped[trial.id] = sent + 1

    def _interrupt(self) -> None:
        """Ctrl-C (or SIGTERM): start no more trials; the running ones get one SIGINT and tear down in order.
        A second Ctrl-C ends them at once."""
        self.interrupts += 1
        self.outcome.interrupted = True
        sig = signal.SIGINT if self.interrupts == 1 else signal.SIGKILL
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        queue = self.todo()
        total = len(self.plan.trials)
        self.outcome.skipped = total - len(queue)
        started = time.monotonic()
        finished = self.outcome.skipped
        self.on_update(finished, finished, total)
        try:
            if queue and forkserver.enabled():  # one interpreter start-up (the harness's imports) per sweep
                self.forkserver = await ForkServer.start(TRIAL_MODULE, [TRIAL_PRELOAD], dict(os.environ),
                                                         self.out / "forkserver.log")
            while (queue and not self.outcome.interrupted) or self.running:
                if self.headroom:
                    self.headroom.sample()
                    self._renice_started()
                self.profile.tick(len(self.running), self.headroom.busy if self.headroom else None)
                self.profile.state = "drained" if not queue else "jobs"
                while len(self.running) < self.jobs and queue and not self.outcome.interrupted:
                    trial = self._pick(queue)
                    if trial is None:
                        break
                    proc = await self._start(trial)
                    self.running[asyncio.create_task(proc.wait())] = (trial, time.monotonic())
                    if self.headroom:
                        self.headroom.admitted(trial.id, trial.point, proc.pid)
                    self.profile.admitted(trial.id, len(self.running), self.headroom)
                    self.profile.state = "drained" if not queue else "jobs"
                    if self.outcome.interrupted:  # Ctrl-C came while it was starting
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(signal.SIGINT)
                if not self.running:
                    continue
                done, _ = await asyncio.wait(list(self.running), timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                self._enforce_timeouts()
                for task in done:
                    trial, t0 = self.running.pop(task)
                    self.procs.pop(trial.id, None)
                    self.starting.pop(trial.id, None)
                    self.computing.discard(self._reference(trial))
                    code = task.result()
                    seconds = time.monotonic() - t0
                    if self.headroom:
                        self.headroom.done(trial.id)
                    row = self._record(trial, seconds) if code == 0 else None
                    if row is not None:
                        finished += 1
                        self.outcome.ran += 1
                        self.say(_trial_line(trial, row, seconds))
                    elif not self.outcome.interrupted or trial.id in self.stopped:
                        self.outcome.failed.append(trial.id)
                        why = f"ran past its time-out of {trial_timeout(trial.point.z):.0f} s" \
                            if trial.id in self.stopped else f"exit {code}"
                        self.say(f"trial {trial.id} failed ({why}): see "
                                 f"{self.out / 'trials' / trial.id / 'trial.log'}")
                self.on_update(self._progress(finished), finished, total)
        finally:
            if self.headroom:
                self.headroom.release()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for proc in self.procs.values():  # only on an error of the sweep itself
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if self.forkserver is not None:
                await self.forkserver.close()
            self.outcome.finished = len({t.id for t in self.plan.trials} & self.done_ids)
            self.outcome.seconds = time.monotonic() - started
            self.profile.tick(len(self.running))
            with contextlib.suppress(OSError):
                self.profile.write(self.out / "admission.json", self.headroom)
        return self.outcome


def _fmt(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(v) else f"{v:.3g}"


def _trial_line(trial: Trial, row: dict[str, Any], seconds: float) -> str:
    return (f"done {trial.id} in {seconds:.1f} s: t_c {_fmt(row.get('t_c_measured'))} s, "
            f"R_a {_fmt(row.get('R_a_measured'))}, R_r {_fmt(row.get('R_r_measured'))}, "
            f"completed {row.get('completed')}/{row.get('requests')}, lost {row.get('lost')}")


def run_sweep(spec_path: str, out: Path, *, repeat: int | None = None, jobs: int = 1, load: str = "locust",
              console: Any = None) -> Outcome:
    """`harness sweep`: validate, then run what is left; progress with ETA on stderr (rich)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if load not in LOADS:
        raise UserError(f"--load: expected one of {', '.join(LOADS)} (got {load!r})")
    if jobs < 1:
        raise UserError(f"--jobs: expected a whole number >= 1 (got {jobs})")
    spec = read_spec(spec_path)
    plan_ = plan(spec, repeat)
    console = console or Console(stderr=True, soft_wrap=True)
    prepare(out, plan_, str(spec_path), load)
    runner = Runner(out, plan_, load, jobs, say=lambda m: console.print(m, highlight=False))
    total, todo = len(plan_.trials), len(runner.todo())
    console.print(f"harness sweep: {len(plan_.points)} points x {plan_.repeat} = {total} trials, "
                  f"{total - todo} already finished, {todo} to run ({jobs} at a time, load {load}) -> {out}",
                  highlight=False)
    with Progress(TextColumn("trials {task.fields[done]}/{task.total:.0f}"), BarColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task("sweep", total=total, done=total - todo)

        def update(completed: float, done: int, _total: int) -> None:
            progress.update(task, completed=completed, done=done)

        runner.on_update = update
        try:
            outcome = asyncio.run(runner.run())
        except KeyboardInterrupt:  # before the signal handlers were in place
            outcome = runner.outcome
            outcome.interrupted = True
    if outcome.interrupted:
        console.print(f"interrupted: {outcome.finished} of {total} trials finished and kept in "
                      f"{out / 'trials.csv'}; resume with the same command: harness sweep {spec_path} "
                      f"--out {out}", highlight=False)
        raise SystemExit(130)
    console.print(f"sweep: {outcome.finished}/{total} trials finished ({outcome.ran} now, {outcome.skipped} before) "
                  f"in {outcome.seconds:.0f} s; results in {out / 'trials.csv'}; next: harness fit {out}, "
                  f"harness report {out}", highlight=False)
    if outcome.failed:
        console.print(f"{len(outcome.failed)} trial(s) failed: {', '.join(outcome.failed)}; rerun the same command "
                      "to retry them", highlight=False)
        raise SystemExit(1)
    return outcome


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "trial":
        trial_main(sys.argv[2:])
    else:
        print("usage: python -m harness.experiment.sweep trial TRIAL_DIR PARENT_PID  (internal; use `harness sweep`)",
              file=sys.stderr)
        raise SystemExit(2)
