"""The faults `harness run --fault NAME` knows.

- slm-crash: SIGKILL the instance driving the target request (the owning SLM; in the distributed design,
  the owning instance of the module at that point). The crash of section III. At `worst` the driver has
  sent its last heartbeat and fallen silent at the modelled moment first (harness/faults/aim.py).
- worker-crash: SIGKILL the worker m_K answering the target request's task K, just before it would have
  answered (centralised, workers duplicated); in the distributed design the modules are the workers, so it
  is the same as slm-crash.
- slm-pause: SIGSTOP the driver for fault_for, then SIGCONT: a grey failure. It is declared dead, a
  survivor takes over, then it wakes up and finishes too: without fencing, in the centralised design the
  BSS sees a duplicate; in the distributed one both twins run the task and the next module drops the
  second hop (`request_duplicate`), so the BSS does not.
- link-delay: add `spike` seconds of latency to the driver's operational links for fault_for.
- partition: cut the heartbeat and state links between the driver and its peers for fault_for, both ways:
  each side thinks the other is dead.
"""

from __future__ import annotations

import asyncio
import time

from harness.errors import UserError
from harness.faults import aim
from harness.faults.base import Fault, FaultContext
from harness.plan import config
from harness.plan.deploy import Link


class _Aimed(Fault):
    """A fault that strikes the driver of the target request at the configured moment."""

    def __init__(self, ctx: FaultContext) -> None:
        super().__init__(ctx)
        self.load_started = time.monotonic()
        self.hit: aim.Aim | None = None

    def start_clock(self) -> None:
        self.load_started = time.monotonic()

    async def inject(self) -> None:
        self.hit = await aim.moment(self.ctx, self.load_started)
        await self.strike(self.hit)

    async def strike(self, hit: aim.Aim) -> None:
        raise NotImplementedError

    def record(self, action: str, target: str, **fields: object) -> None:
        moment = self.hit.fields() if self.hit else {"req": None, "task": None, "early_by": 0.0}
        self.ctx.record(action, target, **moment, **fields)


class SlmCrash(_Aimed):
    name = "slm-crash"

    async def strike(self, hit: aim.Aim) -> None:
        self.record("kill", hit.driver)
        self.ctx.processes.kill(hit.driver)


class WorkerCrash(_Aimed):
    name = "worker-crash"

    async def inject(self) -> None:
        if self.ctx.z.design == "distributed":
            return await super().inject()  # the modules are the workers
        ctx = self.ctx
        k = ctx.z.fault_task or aim.worst_task(ctx)
        req, driver, call = await aim.task_started(ctx, k)
        # the replica that took the call is the one whose task starts: on the bus, replicas share one queue
        # (one address), so the address called cannot name it
        started = await ctx.history.wait_for(
            lambda e: e["kind"] == "task_start" and e.get("req") == req and e.get("task") == k and e["t"] >= call["t"],
            aim.WAIT)
        worker = started["svc"]
        due = call["t"] + ctx.scaled(ctx.z.per_task("l_a")[k - 1] + 0.9 * ctx.z.per_task("t_i")[k - 1])
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        self.hit = aim.Aim(req, driver, k)
        self.record("kill", worker)
        ctx.processes.kill(worker)

    async def strike(self, hit: aim.Aim) -> None:
        self.record("kill", hit.driver)
        self.ctx.processes.kill(hit.driver)


class SlmPause(_Aimed):
    name = "slm-pause"

    def __init__(self, ctx: FaultContext) -> None:
        super().__init__(ctx)
        self.paused: str | None = None

    async def strike(self, hit: aim.Aim) -> None:
        self.record("pause", hit.driver, duration=self.ctx.z.fault_duration)
        self.ctx.processes.pause(hit.driver)
        self.paused = hit.driver
        await asyncio.sleep(self.ctx.scaled(self.ctx.z.fault_duration))
        await self.heal()

    async def heal(self) -> None:
        if self.paused:
            self.ctx.processes.resume(self.paused)
            self.record("resume", self.paused)
            self.paused = None
            await aim.release(self.ctx, self.hit)  # silenced by `worst`: it wakes up and goes on


class _LinkFault(_Aimed):
    """A fault on some of the driver's links for fault_for: needs a link backend that can change them."""

    planes: tuple[str, ...] = ()
    both_ways = False
    actions = ("", "")  # what the history calls striking and undoing

    def __init__(self, ctx: FaultContext) -> None:
        super().__init__(ctx)
        self.touched: list[Link] = []

    async def setup(self) -> None:
        if self.ctx.links is None:
            raise UserError(f"fault {self.name} needs a link backend that can change links (link_backend: proxy)")

    def apply(self, link: Link) -> None:
        raise NotImplementedError

    def undo(self, link: Link) -> None:
        raise NotImplementedError

    async def strike(self, hit: aim.Aim) -> None:
        self.touched = [link for link in self.ctx.deployment.links if link.plane in self.planes and (
            link.src == hit.driver or (self.both_ways and link.dst == hit.driver))]
        for link in self.touched:
            self.apply(link)
        self.record(self.actions[0], hit.driver, links=len(self.touched), duration=self.ctx.z.fault_duration)
        await aim.release(self.ctx, hit)  # silenced by `worst` until its links were changed
        await asyncio.sleep(self.ctx.scaled(self.ctx.z.fault_duration))
        await self.heal()

    async def heal(self) -> None:
        if self.touched:
            for link in self.touched:
                self.undo(link)
            self.record(self.actions[1], self.hit.driver if self.hit else "", links=len(self.touched))
            self.touched = []


class LinkDelay(_LinkFault):
    name = "link-delay"
    planes = ("op",)
    actions = ("delay", "restore")

    def apply(self, link: Link) -> None:
        assert self.ctx.links is not None
        spike = self.ctx.z.spike
        self.ctx.links.set_delay(link, link.delay_fwd + spike, link.delay_rev + spike)

    def undo(self, link: Link) -> None:
        assert self.ctx.links is not None
        self.ctx.links.set_delay(link, link.delay_fwd, link.delay_rev)


class Partition(_LinkFault):
    name = "partition"
    planes = ("hb", "state")
    both_ways = True
    actions = ("cut", "heal")

    def apply(self, link: Link) -> None:
        assert self.ctx.links is not None
        self.ctx.links.cut(link)

    def undo(self, link: Link) -> None:
        assert self.ctx.links is not None
        self.ctx.links.heal(link)


from harness.faults import broker  # noqa: E402  (its faults build on the classes above)

FAULTS: dict[str, type[_Aimed]] = {f.name: f for f in (SlmCrash, WorkerCrash, SlmPause, LinkDelay, Partition,
                                                         broker.BrokerCrash, broker.BrokerPause,
                                                         broker.BrokerPartition)}
# the names are the config's (harness.plan.config.FAULTS, the registry); this maps each to its class
assert set(FAULTS) == set(config.FAULTS) - {"none"}, "config.FaultName and the fault catalogue disagree"


def make(ctx: FaultContext) -> Fault | None:
    """The configured fault, or None for `fault: none`."""
    if ctx.z.fault == "none":
        return None
    return FAULTS[ctx.z.fault](ctx)
