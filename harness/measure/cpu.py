"""CPU seconds per service, sampled while the run goes on: a SIGKILLed process takes its counters with it,
so the last sample before it died is what counts (the run also samples right before each kill it makes).

Figures are counted from a baseline: `start()` takes one and `mark()` takes it again, so interpreter
start-up, settling and warm-up (harness.experiment.warmup) are not charged to the measured workflows.

The same samples read the host's CPU (/proc/stat through psutil: every process of the machine, the other
users' included), so a run records how much headroom the host had while it was measured (`host()`): a
timing taken on a saturated host includes waiting for a core, and is a measurement of the host, not of the
design (harness.measure.metrics.saturated).

A service is its whole live process tree: its own CPU, what its exited children left in its counters (once
reaped), and every live descendant's (a target's instance is often a master that forks workers, like
tacker-conductor's cotyledon: the work is in the workers). Descendants are found through Linux's
/proc/PID/task/TID/children, a few small reads a sample; a figure never goes down (a descendant reaped by
init takes its counters along: the service keeps the most it was seen to have used).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from pathlib import Path

import psutil

FULL = 0.95  # an interval in which the host's cores were at least this busy had no headroom left


def host_busy() -> float:
    """CPU seconds the host's cores have spent busy since boot (user, system, irq, steal: all that is not idle
    or waiting for I/O), summed over the cores; guest time is already inside user time."""
    t = psutil.cpu_times()
    unavailable = sum(getattr(t, name, 0.0) for name in ("idle", "iowait", "guest", "guest_nice"))
    return sum(t) - unavailable


def children(pid: int) -> list[int]:
    """The live direct children of pid (every thread's), [] where /proc does not say."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid, breadth first."""
    found, frontier = [], children(pid)
    while frontier:
        found.extend(frontier)
        frontier = [c for p in frontier for c in children(p)]
    return found


def used(proc: psutil.Process) -> tuple[float, float]:
    """(user, system) seconds of one process and the children it reaped."""
    times = proc.cpu_times()
    return times.user + times.children_user, times.system + times.children_system


class CpuSampler:
    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.procs: dict[str, psutil.Process] = {}
        self.known: dict[int, psutil.Process] = {}  # live descendants seen, kept so a reused pid is told apart
        for name, pid in pids.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.procs[name] = psutil.Process(pid)
        self.interval = interval
        self.last: dict[str, tuple[float, float]] = {}
        self.base: dict[str, tuple[float, float]] = {}
        self.host_samples: list[tuple[float, float]] = []  # (monotonic s, busy core-seconds) since the baseline
        self._task: asyncio.Task | None = None

    def add(self, name: str, pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.procs[name] = psutil.Process(pid)

    def sample(self) -> None:
        self.host_samples.append((time.monotonic(), host_busy()))
        alive: dict[int, psutil.Process] = {}
        for name, proc in self.procs.items():
            try:
                user, system = used(proc)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            for pid in descendants(proc.pid):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    child = self.known.get(pid)
                    if child is None or not child.is_running():
                        child = psutil.Process(pid)
                    u, s = used(child)
                    user, system = user + u, system + s
                    alive[pid] = child
            before = self.last.get(name, (0.0, 0.0))
            self.last[name] = (max(user, before[0]), max(system, before[1]))
        self.known = alive  # the descendants gone since the last sample are forgotten

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.mark()
        self._task = asyncio.create_task(self._loop())

    def mark(self) -> None:
        """From now on: the figures `stop()` returns are the CPU used after this call."""
        self.host_samples = []
        self.sample()
        self.base = dict(self.last)

    async def stop(self) -> dict[str, tuple[float, float]]:
        """Final sample; {name: (user seconds, system seconds)} since the baseline."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
        zero = (0.0, 0.0)
        return {name: (u - self.base.get(name, zero)[0], s - self.base.get(name, zero)[1])
                for name, (u, s) in self.last.items()}

    def host(self) -> dict[str, float]:
        """The host's CPU over the samples since the baseline: `cpus`, `busy` (mean busy fraction of all its
        cores), `busy_p90` (the 90th percentile of the per-interval fractions, weighted by duration), `full`
        (the share of the time with the cores at least FULL busy) and `seconds` covered; {} without two samples."""
        return host_summary(self.host_samples, psutil.cpu_count() or 1)


def host_summary(samples: list[tuple[float, float]], cpus: int) -> dict[str, float]:
    """See `CpuSampler.host`: from (monotonic s, busy core-seconds) samples, in time order."""
    kept = samples[:1]
    for sample in samples[1:]:  # a sample right after another (a kill's) spans one clock tick or none
        if sample[0] - kept[-1][0] >= 0.05:
            kept.append(sample)
    spans = [(t1 - t0, (b1 - b0) / ((t1 - t0) * cpus)) for (t0, b0), (t1, b1) in itertools.pairwise(kept)]
    seconds = sum(d for d, _ in spans)
    if not spans or seconds <= 0:
        return {}
    fractions = sorted(spans, key=lambda s: s[1])
    at, p90 = 0.0, fractions[-1][1]
    for d, f in fractions:
        at += d
        if at >= 0.9 * seconds:
            p90 = f
            break
    return {"cpus": cpus, "busy": min(1.0, sum(d * f for d, f in spans) / seconds), "busy_p90": min(1.0, p90),
            "full": sum(d for d, f in spans if f >= FULL) / seconds, "seconds": seconds}
