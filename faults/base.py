"""The fault interface and the context a fault strikes in: the experiment z, the deployment, the live history,
the controls of processes, links and the broker (faults.contract), and the model's pure pieces."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from faults.contract import (
    BrokerHandle,
    DeploymentView,
    ExperimentView,
    History,
    LinkControl,
    ProcessControl,
    WorkflowModel,
)


@dataclass
class FaultContext:
    """Everything a fault may touch, handed in by the runner that drives it."""

    z: ExperimentView
    deployment: DeploymentView
    history: History
    processes: ProcessControl
    links: LinkControl | None = None
    target_index: int = 1  # which submitted request (1-based) the fault aims at
    broker: BrokerHandle | None = None  # the run's broker, on the bus (transport amqp); None elsewhere
    notes: list[str] = field(default_factory=list)
    model: WorkflowModel = field(kw_only=True)  # the runner's analytic model (manobench: harness.model)

    def record(self, action: str, target: str, **fields: object) -> None:
        """A `fault` event in the run's own history, so the checker and the figures see when it struck."""
        self.history.emit("harness", "fault", fault=self.z.fault, action=action, target=target, **fields)

    def scaled(self, paper_seconds: float) -> float:
        """Wall seconds of a paper duration: z is in paper seconds, the run in `time_scale` of them."""
        return paper_seconds * self.z.time_scale


class Fault:
    """Base class: setup checks prerequisites before the load starts; inject strikes; heal undoes.

    A lasting fault (a pause, a cut or delayed link, a broker down) sets `struck` when it strikes, `hold`s it
    for fault_for and says in `restore` how it is undone; `heal` undoes it once, whoever comes first: its
    own timer or the runner's teardown."""

    name = "none"
    struck = False  # a lasting fault is on: heal has something to undo

    def __init__(self, ctx: FaultContext) -> None:
        self.ctx = ctx

    async def setup(self) -> None:
        """Check what the fault needs is there (raise FaultError otherwise), before anything is loaded."""

    def start_clock(self) -> None:
        """The load starts now: `time:T` counts from here."""

    async def inject(self) -> None:
        """Wait for the moment (see faults.aim) and strike."""

    async def hold(self) -> None:
        """Keep the fault on for fault_for, then heal it."""
        await asyncio.sleep(self.ctx.scaled(self.ctx.z.fault_duration))
        await self.heal()

    async def heal(self) -> None:
        """Undo whatever can be undone, once; always called by the runner, also after an error."""
        if self.struck:
            self.struck = False
            await self.restore()

    async def restore(self) -> None:
        """What undoing the fault takes (a crash: nothing)."""
