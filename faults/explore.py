"""Every crash point of a workflow, and the classes of those that cost the same (`fault_at: every`).

A crash point is (K, F): the driver of the target request sends a heartbeat at the end of task K and is
SIGKILLed F heartbeat intervals later (`fault_at task:K@F`, faults/aim.py). The victim is the driver
at that moment: the owning SLM (centralised) or the owning instance of module K (distributed). The other
instances that could own the request (k SLMs, two twins) run the same code with the same parameters, so
which of them owns it is symmetric and is not explored; an exhaustive search would still count them.

What a crash point costs is decided by what the survivor must redo, which the structure of the workflow
fixes without any timing:

- centralised: the tasks after the last state share that got out. At F = 0 the driver holds task K's result,
  so a share after K is not made: the lost tasks are those since the share point before K. At F > 0 it
  goes on working, so a share after K gets out first. A crash F > 0 after the last task comes after the
  completion went out: nothing of the target is lost.
- distributed: at F = 0 the twin redoes task K; at F > 0 module K has forwarded the state (both instances
  of the next module receive it) and nothing is redone; after the last task, the completion went out.

Two crash points cost the same when the tasks they lose have the same parameters (t_i, l_a, l_b: "a crash
between two share points costs the same wherever the share points are equal") and the phase is the same;
the phase is never pooled, because the detector's wait after the last heartbeat is the phase's business.
One run per class explores them all (`classes`); `exhaustive_runs` counts every (K, F, instance).

What the model says of the workflow (share points, task times, t_h) is the caller's `model` (a
faults.contract.WorkflowModel: manobench passes harness.model), so the library never imports a runner's model.
"""

from __future__ import annotations

from dataclasses import dataclass

from faults.contract import ExperimentView, WorkflowModel

PHASES = (0.0, 0.25, 0.5, 0.75)  # heartbeat intervals after the heartbeat at the end of the task
COMPLETED = "completed"  # a crash after the target's completion went out


@dataclass(frozen=True)
class CrashPoint:
    task: int  # K
    phase: float  # F
    lost: tuple[int, ...] | None  # the tasks the survivor redoes; None: the target had completed

    @property
    def fault_at(self) -> str:
        return f"task:{self.task}@{self.phase:g}"


def lost_tasks(model: WorkflowModel, z: ExperimentView, task: int, phase: float) -> tuple[int, ...] | None:
    """The tasks a crash at (task, phase) makes the survivor redo (module docstring); None if none can be."""
    if phase > 0 and task == z.n:
        return None
    if z.design == "distributed":
        return (task,) if phase == 0 else ()
    if z.mechanism == "restart":
        return tuple(range(1, task + 1))
    shared = [p for p in model.share_points(z.n, z.s_o, z.s_p) if p < task or (phase > 0 and p == task)]
    return tuple(range((shared[-1] if shared else 0) + 1, task + 1))


def crash_points(model: WorkflowModel, z: ExperimentView, phases: tuple[float, ...] = PHASES) -> list[CrashPoint]:
    """Every task boundary of the workflow at every phase."""
    return [CrashPoint(k, f, lost_tasks(model, z, k, f)) for k in range(1, z.n + 1) for f in phases]


def _signature(z: ExperimentView, point: CrashPoint) -> tuple:
    """What a crash point's cost depends on: the phase and the parameters of each task it loses, in order."""
    if point.lost is None:
        return (point.phase, COMPLETED)
    keys = ("t_i",) if z.design == "distributed" else ("t_i", "l_a", "l_b")
    return (point.phase, *(tuple(z.per_task(key)[k - 1] for key in keys) for k in point.lost))


def classes(model: WorkflowModel, z: ExperimentView, phases: tuple[float, ...] = PHASES) -> list[list[CrashPoint]]:
    """The crash points grouped by cost signature, in first-seen order; the first of each is the one run."""
    out: dict[tuple, list[CrashPoint]] = {}
    for point in crash_points(model, z, phases):
        out.setdefault(_signature(z, point), []).append(point)
    return list(out.values())


def instances(z: ExperimentView) -> int:
    """How many instances could be the driver at a boundary: k SLMs, or a module's two twins."""
    return z.k if z.design == "centralised" else 2


def exhaustive_runs(z: ExperimentView, phases: tuple[float, ...] = PHASES) -> int:
    """Runs of an exhaustive search: every boundary, every phase, every instance that could be the driver."""
    return z.n * len(phases) * instances(z)


def predicted_lost_time(model: WorkflowModel, z: ExperimentView, point: CrashPoint) -> float:
    """t_r - t_c of the target by the model's corrected reading at this crash point (paper seconds): the
    detection l_hb + t_h after the last heartbeat plus the work redone; 0 once the target had completed, and
    0 in the distributed design once the state was forwarded (the survivors of the next module go on)."""
    if point.lost is None:
        return 0.0
    if z.design == "distributed":
        if not point.lost:
            return 0.0  # the state went on to both instances of the next module: nobody waits for the victim
        redo = sum(model.task_durations(z)[k - 1] for k in point.lost)
    else:
        costs = model.centralised_task_costs(z)
        redo = sum(costs[k - 1] for k in point.lost)
    return z.l_hb + model.t_h(z) + redo
