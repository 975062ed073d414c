"""Faults on the run's broker (`transport: amqp`, manobench: harness.runtime's Broker): the shared component of a bus.

- broker-crash: SIGKILL the broker; `fault_for` later it is started again on the same data directory
  (durable queues and persistent messages come back, transient ones do not). Every service loses every
  connection at once and reconnects with back-off (`broker_lost`, `broker_back`).
- broker-pause: SIGSTOP the broker for `fault_for`: connections stay open but nothing moves, so every
  heartbeat stops at once and, when `fault_for` > t_h, every instance declares its peers dead.
- broker-partition: cut the driver's connections to the broker (all three planes) for `fault_for`.

Peers declared dead while the broker was away are reported apart from false suspicions (summary.csv's
`broker_suspicions`; the checker's `broker_suspicions`), with the time the services took to reconnect
after it came back (`broker_recovery`). They strike after task K (`task:K`), at `time:T`, or by default
(`worst`) after task ceil(n/2) of the target request, in the middle of a workflow: for a broker that every
instance shares there is no one driver whose heartbeat phase matters (broker-partition: as `partition`).
"""

from __future__ import annotations

import math

from faults import aim
from faults.aimed import Aimed
from faults.base import FaultContext
from faults.contract import BrokerHandle, FaultError
from faults.links import Partition
from protocol.bus import BROKER_ID


def _broker(ctx: FaultContext, fault: str) -> BrokerHandle:
    broker = ctx.broker
    if ctx.z.transport != "amqp" or broker is None:
        raise FaultError(f"fault {fault} needs the bus: --transport amqp")
    return broker


class _OnBroker(Aimed):
    """A fault on the broker itself, struck in the middle of the target request."""

    action = ""  # the `fault` event's action when it strikes

    async def setup(self) -> None:
        self.broker = _broker(self.ctx, self.name)

    def break_broker(self) -> None:
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError

    async def strike(self, hit: aim.Aim) -> None:
        """Break the broker for fault_for, then mend it."""
        self.record(self.action, BROKER_ID, duration=self.ctx.z.fault_duration)
        self.break_broker()
        self.struck = True
        await self.hold()

    async def inject(self) -> None:
        z = self.ctx.z
        if z.fault_task is None and z.fault_time is None:
            self.hit = await aim.after_task(self.ctx, max(1, math.ceil(z.n / 2)))
        else:
            self.hit = await aim.moment(self.ctx, self.load_started)
        await self.strike(self.hit)


class BrokerCrash(_OnBroker):
    name: str = "broker-crash"
    action = "kill"

    def break_broker(self) -> None:
        self.broker.kill()

    async def restore(self) -> None:
        await self.broker.start()  # on the same data directory
        self.record("restart", BROKER_ID, started_in=self.broker.started_in)


class BrokerPause(_OnBroker):
    name: str = "broker-pause"
    action = "pause"

    def break_broker(self) -> None:
        self.broker.pause()

    async def restore(self) -> None:
        self.broker.resume()
        self.record("resume", BROKER_ID)


class BrokerPartition(Partition):
    """The driver's three connections to the broker cut, both directions, for fault_for."""

    name: str = "broker-partition"
    planes = ("op", "hb", "state")  # type: ignore[assignment]
    both_ways = False  # on the bus a service's only links are its own connections to the broker

    async def setup(self) -> None:
        await super().setup()
        _broker(self.ctx, self.name)

