"""The fault interface and the context a fault strikes in: the experiment z, the deployment, the live history,
the controls of processes, links and the broker (faults.contract), and the model's pure pieces."""

from __future__ import annotations

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
    """Base class: setup checks prerequisites before the load starts; inject strikes; heal undoes."""

    name = "none"

    def __init__(self, ctx: FaultContext) -> None:
        self.ctx = ctx

    async def setup(self) -> None:
        """Check what the fault needs is there (raise FaultError otherwise), before anything is loaded."""

    def start_clock(self) -> None:
        """The load starts now: `time:T` counts from here."""

    async def inject(self) -> None:
        """Wait for the moment (see faults.aim) and strike."""

    async def heal(self) -> None:
        """Undo whatever can be undone (resume, restore, heal); always called, also after an error."""
