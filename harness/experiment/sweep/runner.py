"""The sweep's runner: the unfinished trials of a plan, up to `jobs` at a time, each in a child process
(harness/experiment/sweep/trial.py, forked from one fork server per sweep), admitted by the machine's CPU headroom
(admission.py), each stopped when it runs past its time-out, and its summary row appended to trials.csv once it
has finished. It reports through callbacks (`on_update`, `say`): what is shown, and the exit codes, are the
command line's (harness/cli/sweep_progress.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import SupportsFloat

from harness.experiment.sweep.admission import Headroom, Profile
from harness.experiment.sweep.folder import TrialsCsv, read_rows
from harness.experiment.sweep.spec import Plan, Trial
from harness.experiment.sweep.trial import TRIAL_MODULE, TRIAL_PRELOAD, clear_trial_dir
from harness.history.reading import parse_line
from harness.plan.config import Experiment
from harness.runtime import forkserver
from harness.runtime.forkserver import Forked, ForkServer


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


STARTUP_NICE = 10  # a concurrent trial starts at this nice value, and is reniced to 0 once its deployment is up

def monolith_cache_file(z: Experiment, cache: Path) -> Path:
    from harness.experiment.run import monolith_key

    return cache / f"monolith-{monolith_key(z)}.json"


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
                                               args=[str(tdir), str(self.forkserver.pid)])
        else:
            log = (tdir / "trial.log").open("ab")
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", TRIAL_MODULE, str(tdir), str(os.getpid()),
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
            whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written is read next time, whole
            self.starting[trial_id] = offset + len(whole)
            if not any(_is_ready(line) for line in whole.splitlines()):
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

    def _record(self, trial: Trial, seconds: float) -> dict[str, object] | None:
        from harness.analysis import tables

        rows: list[dict[str, str]] = tables.read_csv(self.out / "trials" / trial.id / "summary.csv",  # type: ignore[assignment]
                                                     text=True).to_dict("records")
        if not rows:
            return None
        row: dict[str, object] = {**rows[0], "point": trial.point.id, "repeat": trial.repeat, "trial": trial.id,
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


def _is_ready(line: bytes) -> bool:
    """Whether one line of a trial's history is the harness's `ready` (read as the history reader reads it)."""
    event, _ = parse_line(line)
    return event is not None and event["kind"] == "ready" and event["svc"] == "harness"


def _fmt(value: object) -> str:
    if not isinstance(value, SupportsFloat | str):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(v) else f"{v:.3g}"


def _trial_line(trial: Trial, row: Mapping[str, object], seconds: float) -> str:
    return (f"done {trial.id} in {seconds:.1f} s: t_c {_fmt(row.get('t_c_measured'))} s, "
            f"R_a {_fmt(row.get('R_a_measured'))}, R_r {_fmt(row.get('R_r_measured'))}, "
            f"completed {row.get('completed')}/{row.get('requests')}, lost {row.get('lost')}")
