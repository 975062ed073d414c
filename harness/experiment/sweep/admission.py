"""Admission of a sweep's concurrent trials by measured CPU headroom, machine-wide (`Headroom`), and how many
trials may run at once when the command line leaves it to the machine (`auto_jobs`).

The sweeps of a machine share two things: a lock (one admission decision at a time) and a board (each sweep's
running trials, what they hold reserved, what waits). Both live under the harness's own state root
(`state_dir("sweep")`, 0700, ours; the lock 0600), not in /tmp, where anyone could plant an entry that stalls
every sweep or hold the lock. Every entry read from the board is validated (`read_entry`): a regular file of
ours, small, named `<pid>-<token>.json` for the pid it holds, a JSON object of this kind with numbers in range,
and alive: its sweep holds an flock on `<pid>-<token>.alive` for as long as it runs (the kernel drops it when
the process dies, however it dies, so neither a dead pid nor a recycled one nor a process that is no sweep
can hold it). Anything else (junk, a foreign or planted file) is ignored and left alone; a dead sweep's entry
(its `.alive` file there but held by nobody) is removed: it never stalls a decision.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from harness.errors import UserError
from harness.plan.config import Experiment
from harness.state import state_dir, write_atomic

if TYPE_CHECKING:
    from harness.experiment.sweep.spec import Point


class BoardEntry(TypedDict, total=False):
    """Another sweep's entry on the board, as `Headroom.read_entry` validated it: a live sweep's numbers, or
    `stale` alone for an entry whose sweep is gone."""

    pid: int
    running: int
    reserved: float
    waiting: float
    stale: bool


CPU_CAP_ENV = "MANOBENCH_SWEEP_CPU"  # the share of the host's cores concurrent trials may fill (default CPU_CAP)
CPU_CAP = 0.9
ADMIT_GAP = 0.5  # wall seconds between one sweep's admissions (what a trial needs is reserved from the start)
LOCK_NAME = "admission.lock"  # beside the board: one admission decision at a time on the machine
BOARD_NAME = "admission.d"  # each sweep's running trials, what they reserve, what waits
ENTRY_KIND = "manobench-sweep"
ENTRY_NAME = re.compile(r"^(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}\.json$")
ENTRY_MAX_BYTES = 4096
ALIVE_SUFFIX = ".alive"  # <pid>-<token>.alive: flocked by its sweep while it runs
AUTO_JOBS_PER_CORE, AUTO_JOBS_MAX = 4, 16  # `--jobs auto`: at most this many trials at once; CPU decides below
HEAVY = 0.9  # cores: a trial expected to need more keeps room for itself while it waits (Headroom)
WINDOW = 3.0  # wall seconds over which a running trial's CPU rate is measured
# what a trial of a point not yet measured is expected to need at its busiest (cores): a base plus its
# heartbeats (sent and received) a wall second as the model counts them (harness.model.compute.activity),
# fitted to the trials of fig6/7/8.yaml on this 2-core host (docs/analysis.md, "Speed"), times PRIOR_PEAK
PRIOR_BASE, PRIOR_PER_HEARTBEAT, PRIOR_PEAK = 0.15, 0.0013, 1.4


def auto_jobs(cores: int | None = None) -> int:
    """The bound on concurrent trials when the machine decides (`--jobs auto`, the default): AUTO_JOBS_PER_CORE
    a core, at least 2, at most AUTO_JOBS_MAX (8 on this 2-core host). What actually runs at once is what the
    Headroom admits under it: a trial needs 0.2-0.5 cores at its busiest, so a few per core fit."""
    import psutil

    cores = cores or psutil.cpu_count() or 1
    return max(2, min(AUTO_JOBS_MAX, AUTO_JOBS_PER_CORE * cores))


def cpu_cap() -> float:
    """MANOBENCH_SWEEP_CPU (the share of the cores concurrent trials may fill), else CPU_CAP; checked."""
    text = os.environ.get(CPU_CAP_ENV, "").strip()
    if not text:
        return CPU_CAP
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise UserError(f"{CPU_CAP_ENV}: expected a share of the cores, 0 < x <= 1 (got {text!r})")
    return value


def board_dir() -> Path:
    """The machine's admission board (0700, under the state root; its parent, the lock's folder, 0700 too:
    state_dir makes missing parents with the umask's mode, so each level is made on its own)."""
    state_dir("sweep")
    return state_dir("sweep", BOARD_NAME)


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
    admitted. One decision at a time on the machine (an flock on the lock beside the board), each sweep's
    admissions ADMIT_GAP apart. Other sweeps' entries count only as `read_entry` validates them."""

    def __init__(self, cap: float | None = None, board: Path | None = None) -> None:
        import psutil

        self.psutil = psutil
        self.cap = cap if cap is not None else cpu_cap()
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
        self.board = board or board_dir()
        self.lock = self.board.parent / LOCK_NAME
        self.mine = self.board / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"  # two sweeps of one process differ
        self.alive: int | None = None  # the fd of our flocked .alive file, once published
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
        """Other sweeps' (reserved cores, largest waiting need, running trials), from the board's valid entries;
        a dead sweep's own entry is removed, anything else not valid is ignored (and left alone)."""
        reserved, waiting, count = 0.0, 0.0, 0
        with contextlib.suppress(OSError):
            for path in self.board.iterdir():
                if path == self.mine:
                    continue
                entry = self.read_entry(path)
                if entry is None:
                    continue
                if entry.get("stale"):
                    for gone in (path, path.with_suffix(ALIVE_SUFFIX)):
                        with contextlib.suppress(OSError):
                            gone.unlink()
                    continue
                reserved += entry["reserved"]
                waiting = max(waiting, entry["waiting"])
                count += entry["running"]
        return reserved, waiting, count

    def read_entry(self, path: Path) -> BoardEntry | None:
        """A board entry as {"pid", "running", "reserved", "waiting"} if it is a live sweep's; {"stale": True}
        for an entry of ours whose sweep is gone (its pid dead or recycled); None for anything else: not a
        regular file of ours, too big, misnamed, not JSON, another kind, numbers out of range. Why so strict:
        one entry that counts wrongly holds every sweep on the machine back."""
        named = ENTRY_NAME.match(path.name)
        if not named:
            return None
        try:
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_size > ENTRY_MAX_BYTES:
                return None
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("kind") != ENTRY_KIND:
            return None
        pid, running = entry.get("pid"), entry.get("running")
        numbers = [entry.get("reserved"), entry.get("waiting")]
        if (not isinstance(pid, int) or isinstance(pid, bool) or str(pid) != named["pid"]
                or not isinstance(running, int) or isinstance(running, bool) or not 0 <= running <= 1000
                or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                           for x in numbers)):
            return None
        limit = 4.0 * self.cores  # more than any sweep can hold reserved: a planted number, not a measurement
        if not (0 <= entry["reserved"] <= limit and 0 <= entry["waiting"] <= limit):
            return None
        held = _held(path.with_suffix(ALIVE_SUFFIX))
        if held is None:
            return None  # no .alive file of ours beside it: not written by a sweep
        if not held:
            return {"stale": True}
        return {"pid": pid, "running": running, "reserved": float(entry["reserved"]),
                "waiting": float(entry["waiting"])}

    def publish(self) -> None:
        """This sweep's running trials' reservations and its waiting heavy trial, for the other sweeps."""
        held = [w.reserved for w in self.watched.values()] + ([self.pending] if self.pending else [])
        text = json.dumps({"kind": ENTRY_KIND, "pid": os.getpid(), "running": len(held),
                           "reserved": round(sum(held), 3), "waiting": round(self.waiting, 3)})
        if text == self.published:
            return
        with contextlib.suppress(OSError):
            self.board.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.alive is None:  # before the entry: an entry is never there without its held .alive
                self.alive = _hold(self.mine.with_suffix(ALIVE_SUFFIX))
            write_atomic(self.mine, text)
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
        """flock the lock file (None: it could not be had). Another sweep holds it only for the milliseconds of
        one decision, so this waits for it. 0600 and never through a symlink: only our sweeps take it."""
        import fcntl

        try:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return os.open(os.devnull, os.O_RDONLY)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)
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
        """The sweep ends: its entry leaves the board, then its .alive file (the other order of `publish`)."""
        with contextlib.suppress(OSError):
            self.mine.unlink()
        if self.alive is not None:
            with contextlib.suppress(OSError):
                self.mine.with_suffix(ALIVE_SUFFIX).unlink()
            os.close(self.alive)
            self.alive = None
        self.published = ""


def _hold(path: Path) -> int:
    """Create and flock a sweep's .alive file; the returned fd keeps the lock until it is closed or the process
    dies. O_CLOEXEC: a trial the sweep starts must not inherit it (and outlive the sweep holding it)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _held(path: Path) -> bool | None:
    """Whether a live sweep holds this .alive file; None if it is not a regular file of ours."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        return False  # we got it: nobody holds it (closing the fd drops it again)
    finally:
        os.close(fd)


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
        self.admissions: list[list[float | str | None]] = []  # seconds, trial, trials running, busy cores
        self.trace: list[list[float]] = []  # every 2 s: seconds, trials running, the host's busy cores (smoothed)

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
