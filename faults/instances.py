"""Faults by instance: `crash`, `pause`, `partition` and `link-delay` aimed at the instances `fault_target`
names (ids, or `role:NAME` for every instance of a role), on any target: a target file's orchestrator, which
says nothing of its requests, or one of our designs.

A target file's instance is struck as a whole: its process group (a master and its workers).

The moment needs nothing from the target: `time:T` (T paper seconds after the measured load started) or
`request:K+D` (D paper seconds after the client submitted the K-th measured request: the harness's own
history). `task:K` and `worst` read the target's events (faults.aim) and are refused, before
anything starts, for a target that has none (`instrumented: false`).

- crash: SIGKILL every instance named, at once.
- pause: SIGSTOP them for fault_for, then SIGCONT.
- restart: SIGKILL them, then after fault_for start each again as it was started (local runtime).
- partition: cut every link to and from them (peers' and the client's, every plane) for fault_for.
- link-delay: `spike` more latency on every link to and from them, for fault_for.

The fault event records `req` (request:K+D: the K-th request) and no task: from outside, which task a
workflow was at is not known.
"""

from __future__ import annotations

import asyncio
import time

from faults import aim
from faults.base import Fault, FaultContext
from faults.contract import Event, FaultError, LinkView
from faults.links import Cut, Spike
from faults.selection import select_instances


class InstanceFault(Fault):
    """Strike the named instances at the moment fault_at names (time:T, request:K+D, or an aim of the history)."""

    def __init__(self, ctx: FaultContext) -> None:
        super().__init__(ctx)
        self.targets = select_instances(ctx.deployment.roles, ctx.z.fault_target)
        self.load_started = time.monotonic()
        self.req: str | None = None

    def start_clock(self) -> None:
        self.load_started = time.monotonic()

    async def moment(self) -> None:
        """Wait for fault_at's moment."""
        z = self.ctx.z
        if z.fault_time is not None:
            await asyncio.sleep(max(0.0, self.load_started + self.ctx.scaled(z.fault_time) - time.monotonic()))
        elif z.fault_request is not None:
            k, delay = z.fault_request
            submitted = await self.ctx.history.wait_for(lambda e: _nth_submission(self.ctx, e, k), aim.WAIT)
            self.req = submitted["req"]
            await asyncio.sleep(max(0.0, submitted["t"] + self.ctx.scaled(delay) - time.monotonic()))
        else:  # task:K, task:K@F, worst: read off the target's own events
            hit = await aim.moment(self.ctx, self.load_started)
            self.req = hit.req

    async def inject(self) -> None:
        await self.moment()
        self.struck = True
        await self.strike()

    async def strike(self) -> None:
        raise NotImplementedError

    def record(self, action: str, **fields: object) -> None:
        for svc in self.targets:
            self.ctx.record(action, svc, req=self.req, task=None, late_by=0.0, **fields)


def _nth_submission(ctx: FaultContext, e: Event, k: int) -> bool:
    """The client's K-th measured submission (warm-up requests are not counted)."""
    if e["kind"] != "submitted" or e["svc"] != "bss" or e.get("warmup"):
        return False
    seen = [x for x in ctx.history.events if x["kind"] == "submitted" and x["svc"] == "bss" and not x.get("warmup")]
    return len(seen) >= k and seen[k - 1] is e


class Crash(InstanceFault):
    name = "crash"

    async def strike(self) -> None:
        for svc in self.targets:
            self.ctx.record("kill", svc, req=self.req, task=None, late_by=0.0)
            self.ctx.processes.kill(svc)


class Pause(InstanceFault):
    name = "pause"

    async def strike(self) -> None:
        for svc in self.targets:
            self.ctx.processes.pause(svc)
        self.record("pause", duration=self.ctx.z.fault_duration)
        await self.hold()

    async def restore(self) -> None:
        for svc in self.targets:
            self.ctx.processes.resume(svc)
        self.record("resume")


class Restart(Crash):
    """Crash, then start the same command again after fault_for: an operator's or a supervisor's restart,
    whose own start-up may act on the work in flight (Tacker's conductor sweeps every operation it finds)."""

    name = "restart"

    async def setup(self) -> None:
        if self.ctx.z.runtime != "local":
            raise FaultError("fault restart: a target file's instances are started again on the local runtime only")

    async def strike(self) -> None:
        await super().strike()
        await self.hold()

    async def restore(self) -> None:
        for svc in self.targets:
            await self.ctx.processes.restart(svc)
            self.ctx.record("restart", svc, req=self.req, task=None, late_by=0.0)


class InstanceLinkFault(InstanceFault):
    """Every link to or from the named instances, for fault_for: needs a link backend that can change links.
    What it does to each link is faults.links's, as for the driver's link faults."""

    actions = ("", "")  # what the history calls striking and undoing (the Cut or Spike mixed in says)

    def __init__(self, ctx: FaultContext) -> None:
        super().__init__(ctx)
        self.touched = [link for link in ctx.deployment.links if link.src in self.targets or link.dst in self.targets]

    async def setup(self) -> None:
        if self.ctx.links is None:
            raise FaultError(f"fault {self.name} needs a link backend that can change links (link_backend: proxy)")
        if not self.touched:
            raise FaultError(f"fault {self.name}: {', '.join(self.targets)} has no links to or from it")

    def apply(self, link: LinkView) -> None:
        raise NotImplementedError

    def undo(self, link: LinkView) -> None:
        raise NotImplementedError

    async def strike(self) -> None:
        for link in self.touched:
            self.apply(link)
        self.record(self.actions[0], links=len(self.touched), duration=self.ctx.z.fault_duration)
        await self.hold()

    async def restore(self) -> None:
        for link in self.touched:
            self.undo(link)
        self.record(self.actions[1], links=len(self.touched))


class InstancePartition(Cut, InstanceLinkFault):
    name = "partition"


class InstanceLinkDelay(Spike, InstanceLinkFault):
    name = "link-delay"


BY_INSTANCE: dict[str, type[InstanceFault]] = {f.name: f for f in (Crash, Pause, Restart, InstancePartition,
                                                                    InstanceLinkDelay)}
