"""The fault interface and what a fault may touch: the deployment, the runtime, the links and the history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from harness.history import Collector
from harness.plan.config import Experiment
from harness.plan.deploy import Deployment, Link


class ProcessControl(Protocol):
    """What a runtime offers faults: the crash (SIGKILL) and the grey failure (freeze / thaw)."""

    def kill(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    async def restart(self, name: str) -> None: ...  # a target file's instance, started again as it was


class LinkControl(Protocol):
    """What a link backend offers faults: change a link's latency, cut it, heal it (paper seconds)."""

    def set_delay(self, link: Link, fwd: float, rev: float) -> None: ...
    def cut(self, link: Link) -> None: ...
    def heal(self, link: Link) -> None: ...


class BrokerHandle(Protocol):
    """What the bus runtime offers the broker faults (harness/runtime/broker.py's Broker): crash it, freeze and
    thaw it, start it again on the same data directory."""

    started_in: float  # wall seconds its last start took

    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    async def start(self) -> None: ...


@dataclass
class FaultContext:
    z: Experiment
    deployment: Deployment
    history: Collector
    processes: ProcessControl
    links: LinkControl | None = None
    target_index: int = 1  # which submitted request (1-based) the fault aims at
    broker: BrokerHandle | None = None  # the run's broker, on the bus (transport amqp); None elsewhere
    notes: list[str] = field(default_factory=list)

    def record(self, action: str, target: str, **fields: object) -> None:
        self.history.emit("harness", "fault", fault=self.z.fault, action=action, target=target, **fields)

    def scaled(self, paper_seconds: float) -> float:
        return paper_seconds * self.z.time_scale


class Fault:
    """Base class: setup checks prerequisites before the load starts; inject strikes; heal undoes."""

    name = "none"

    def __init__(self, ctx: FaultContext) -> None:
        self.ctx = ctx

    async def setup(self) -> None:
        """Check what the fault needs is there (raise UserError otherwise), before anything is loaded."""

    def start_clock(self) -> None:
        """The load starts now: `time:T` counts from here."""

    async def inject(self) -> None:
        """Wait for the moment (see harness.faults.aim) and strike."""

    async def heal(self) -> None:
        """Undo whatever can be undone (resume, restore, heal); always called, also after an error."""
