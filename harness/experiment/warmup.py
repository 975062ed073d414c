"""What happens between `ready` and the first measured request: warm up, and settle.

Why: right after `ready` the machine is still busy (the last services starting, Locust starting, the first
connections opened through the proxies). On 2 cores a service's heartbeats can then be held up for longer
than t_h at small time scales, and the detectors suspect peers that are alive; and the first workflows pay
for cold connections and code paths. Measuring from that moment would charge start-up to the design. So the
harness runs `warmup` workflows that every figure leaves out (`history.measured`) and starts the measured
load only once no peer has been suspected for a quiet window (two heartbeat time-outs: a detector that was
going to fire has fired), counted from the start of the warm-up or from the latest suspicion, whichever is
later; the fault clock and the measured load start after that, at the `load_start` event, which records
what the wait saw.

The warm-up runs inside the quiet window rather than between two windows (settle, warm up, settle again,
as before): what the wait must rule out is a suspicion in the 2 t_h before the measured load,
and a warm-up that saw none has shown that already. It saves up to 4 t_h of wall time a trial (20 s at
Fig 6's slowest heartbeats) and changes no figure (docs/analysis.md, "Speed").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from harness.history import Collector, Event
from harness.plan.config import Experiment

QUIET_MIN = 0.5  # wall seconds without a suspicion, at least
SETTLE_MAX = 30.0  # wall seconds: past this the load starts anyway (the summary counts what follows)

WarmUp = Callable[[int, int, float], Awaitable[int]]  # (n, users, timeout per workflow) -> completed


def quiet_window(z: Experiment) -> float:
    """Two heartbeat time-outs in wall seconds (a detector that was going to fire has fired), >= QUIET_MIN."""
    return max(QUIET_MIN, 2 * (z.t_h or 0) * z.time_scale) if z.design != "monolith" else QUIET_MIN


def warmup_count(z: Experiment) -> int:
    return z.users if z.warmup is None else z.warmup


class SuspicionWatch:
    """The time of the latest `peer_dead` and how many there were, kept as events arrive."""

    def __init__(self, collector: Collector) -> None:
        self.last = time.monotonic()  # the quiet window counts from here, or from the latest suspicion
        self.count = 0
        self._unsubscribe = collector.subscribe(self._see)

    def _see(self, e: Event) -> None:
        if e["kind"] == "peer_dead":
            self.count += 1
            self.last = max(self.last, e["t"])

    async def quiet(self, window: float, limit: float) -> bool:
        """Until `window` seconds have passed since the latest suspicion (or since the watch began); False if
        that did not happen within `limit` seconds of this call."""
        start = time.monotonic()
        while True:
            now = time.monotonic()
            if now - self.last >= window:
                return True
            if now - start >= limit:
                return False
            await asyncio.sleep(min(0.05, window / 4))

    def close(self) -> None:
        self._unsubscribe()


async def prelude(collector: Collector, z: Experiment, warm: WarmUp, timeout: float,
                  say: Callable[[str], None] = print) -> Event:
    """Warm up, then settle until the quiet window has passed; emits and returns the `load_start` event."""
    watch = SuspicionWatch(collector)
    t0 = time.monotonic()
    try:
        n = warmup_count(z)
        done = await warm(n, z.users, timeout) if n else 0
        quiet = await watch.quiet(quiet_window(z), SETTLE_MAX)
    finally:
        watch.close()
    if not quiet:
        say(f"warning: peers were still being suspected {SETTLE_MAX:g} s after start-up ({watch.count} "
            f"suspicions): the machine cannot keep t_h = {z.t_h:g} s at time_scale {z.time_scale:g}; the "
            "summary's false_suspicions counts those during the load")
    return collector.emit("harness", "load_start", waited=time.monotonic() - t0, quiet=quiet,
                          suspicions_before=watch.count, warmup=n, warmup_completed=done)
