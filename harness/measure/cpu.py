"""CPU seconds per service, sampled while the run goes on: a SIGKILLed process takes its counters with it,
so the last sample before it died is what counts (the run also samples right before each kill it makes).

Figures are counted from a baseline: `start()` takes one and `mark()` takes it again, so interpreter
start-up, settling and warm-up (harness.experiment.warmup) are not charged to the measured workflows.
"""

from __future__ import annotations

import asyncio
import contextlib

import psutil


class CpuSampler:
    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.procs: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.procs[name] = psutil.Process(pid)
        self.interval = interval
        self.last: dict[str, tuple[float, float]] = {}
        self.base: dict[str, tuple[float, float]] = {}
        self._task: asyncio.Task | None = None

    def add(self, name: str, pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.procs[name] = psutil.Process(pid)

    def sample(self) -> None:
        for name, proc in self.procs.items():
            try:
                times = proc.cpu_times()
                self.last[name] = (times.user + times.children_user, times.system + times.children_system)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.mark()
        self._task = asyncio.create_task(self._loop())

    def mark(self) -> None:
        """From now on: the figures `stop()` returns are the CPU used after this call."""
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
