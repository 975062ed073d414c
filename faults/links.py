"""Faults on the links between the MANO's processes, through the link backend (proxies or netem): link-delay
(`spike` more latency on the driver's operational links) and partition (its heartbeat and state links cut
both ways), each for fault_for."""

from __future__ import annotations

from faults import aim
from faults.aimed import Aimed
from faults.base import FaultContext
from faults.contract import FaultError, LinkView


class LinkFault(Aimed):
    """A fault on some of the driver's links for fault_for: needs a link backend that can change them."""

    planes: tuple[str, ...] = ()
    both_ways = False
    actions = ("", "")  # what the history calls striking and undoing

    def __init__(self, ctx: FaultContext) -> None:
        super().__init__(ctx)
        self.touched: list[LinkView] = []

    async def setup(self) -> None:
        if self.ctx.links is None:
            raise FaultError(f"fault {self.name} needs a link backend that can change links (link_backend: proxy)")

    def apply(self, link: LinkView) -> None:
        raise NotImplementedError

    def undo(self, link: LinkView) -> None:
        raise NotImplementedError

    async def strike(self, hit: aim.Aim) -> None:
        self.touched = [link for link in self.ctx.deployment.links if link.plane in self.planes and (
            link.src == hit.driver or (self.both_ways and link.dst == hit.driver))]
        for link in self.touched:
            self.apply(link)
        self.struck = bool(self.touched)
        self.record(self.actions[0], hit.driver, links=len(self.touched), duration=self.ctx.z.fault_duration)
        await aim.release(self.ctx, hit)  # silenced by `worst` until its links were changed
        await self.hold()

    async def restore(self) -> None:
        for link in self.touched:
            self.undo(link)
        self.record(self.actions[1], self.hit.driver if self.hit else "", links=len(self.touched))
        self.touched = []


class Spike:
    """What link-delay does to a link and how it is undone: `spike` more latency each way, then the link's own
    again. Shared by the driver's link-delay (below) and an instance's (faults.instances)."""

    ctx: FaultContext
    actions = ("delay", "restore")

    def apply(self, link: LinkView) -> None:
        assert self.ctx.links is not None
        spike = self.ctx.z.spike
        self.ctx.links.set_delay(link, link.delay_fwd + spike, link.delay_rev + spike)

    def undo(self, link: LinkView) -> None:
        assert self.ctx.links is not None
        self.ctx.links.set_delay(link, link.delay_fwd, link.delay_rev)


class Cut:
    """What a partition does to a link and how it is undone: cut, then healed. Shared like `Spike`."""

    ctx: FaultContext
    actions = ("cut", "heal")

    def apply(self, link: LinkView) -> None:
        assert self.ctx.links is not None
        self.ctx.links.cut(link)

    def undo(self, link: LinkView) -> None:
        assert self.ctx.links is not None
        self.ctx.links.heal(link)


class LinkDelay(Spike, LinkFault):
    name = "link-delay"
    planes = ("op",)


class Partition(Cut, LinkFault):
    name = "partition"
    planes = ("hb", "state")
    both_ways = True
