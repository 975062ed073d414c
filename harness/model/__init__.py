"""The paper's analytic model (Eqs 1-10) as pure functions: the yardstick every measurement is held against.

Every ambiguity of the printed equations is resolved twice, selected by `z.model_reading`:
`corrected` (default) counts what actually happens on the wire and in the workflow, `literal` evaluates the
equation as printed. docs/model.md explains each decision next to the equation it concerns.

What is where (every name below is also this package's, so `model.evaluate(z)` reads the same):
- `tasks`: the pieces the equations are built from: task_durations, t_m, share_points, literal_share_count,
  unshared_runs, centralised_task_costs, centralised_lost_work;
- `equations`: Metrics (METRICS its fields, COMPARED those measured beside it), the equations of each design
  (centralised, distributed, monolith, with centralised_t_c, centralised_b_rel, distributed_t_c, t_h),
  assemble, cost (Eq 10), EQUATIONS and evaluate, workflow_timeout;
- `registry`: every metric's name, unit and meaning, written once; `bus`: the bus-aware model beside the
  paper's; `compute`: Q_r in compute from the fitted CPU costs (these three are imported by their own names).
"""

from __future__ import annotations

from harness.model.equations import (
    COMPARED,
    EQUATIONS,
    METRICS,
    Metrics,
    assemble,
    centralised,
    centralised_b_rel,
    centralised_t_c,
    cost,
    distributed,
    distributed_t_c,
    evaluate,
    monolith,
    t_h,
    workflow_timeout,
)
from harness.model.tasks import (
    centralised_lost_work,
    centralised_task_costs,
    literal_share_count,
    share_points,
    t_m,
    task_durations,
    unshared_runs,
)

__all__ = [
    "COMPARED",
    "EQUATIONS",
    "METRICS",
    "Metrics",
    "assemble",
    "centralised",
    "centralised_b_rel",
    "centralised_lost_work",
    "centralised_t_c",
    "centralised_task_costs",
    "cost",
    "distributed",
    "distributed_t_c",
    "evaluate",
    "literal_share_count",
    "monolith",
    "share_points",
    "t_h",
    "t_m",
    "task_durations",
    "unshared_runs",
    "workflow_timeout",
]
