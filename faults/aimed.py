"""The base of every fault that strikes at a moment of the target request (faults/aim.py decides it:
`task:K`, `worst`, `time:T`): it keeps the load's start for `time:T`, waits for the moment, strikes, and
stamps the moment's fields (request, task, how late it struck) on every `fault` event it records."""

from __future__ import annotations

import time

from faults import aim
from faults.base import Fault, FaultContext


class Aimed(Fault):
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
        moment = self.hit.fields() if self.hit else {"req": None, "task": None, "late_by": 0.0}
        self.ctx.record(action, target, **moment, **fields)
