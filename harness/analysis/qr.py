"""The one rule for Eq 10's Q_r, the same for a measured point and for the model, so that a measured cost
and a modelled cost are always comparable (`--qr` picks it for both).

Two readings of the paper's "additional compute relative to the monolith":

- `instances`: extra service instances. Measured: the deployment's services minus one (`instances_extra`);
  model (configured and fitted): the paper's count, n + k - 1 centralised, 2n - 1 distributed
  (`model.Metrics.Q_r`).
- `cpu`: extra compute relative to the monolith, in monolith-equivalents (docs/model.md "Q_r in compute"):
  (the design's compute per workflow / the monolith's) - 1, the tasks' own compute counted whether the
  emulation burnt or slept it. Measured: `Q_r_compute` of each run. Fitted model: harness.model.compute's
  prediction from z, with the fitted CPU costs (fit.py, `cpu.*`: per message, per heartbeat, per second up,
  per service) and the fitted t_c and t_r. The configured model has no CPU costs: its Q_r is NaN, and so is
  its C wherever delta > 0; never an instance count instead.
"""

from __future__ import annotations

from typing import TypeVar

from harness.errors import UserError

QR_RULES = ("cpu", "instances")
Value = TypeVar("Value")  # a float, or a pandas Series of them (one per point)


def q_r(rule: str, *, instances: Value, cpu: Value) -> Value:
    """Q_r under `rule`, given one side's two figures (a measured point's, or a model's: the configured
    model's `cpu` is NaN). Every cost in the analysis takes its Q_r from here."""
    if rule == "instances":
        return instances
    if rule == "cpu":
        return cpu
    raise UserError(f"--qr: expected one of {', '.join(QR_RULES)} (got {rule!r})")


def note(rule: str, cpu_fitted: bool) -> str:
    """One line for a table or report: which Q_r both costs use, and what is missing under it."""
    q_r(rule, instances=0, cpu=0)  # refuses an unknown rule
    if rule == "instances":
        return ("Q_r = instances for both costs: measured, the deployment's extra instances; model, the paper's "
                "n+k-1 (centralised) and 2n-1 (distributed).")
    fitted = ("the fitted model's is its prediction of the same from z with the fitted CPU costs (fit.csv `cpu.*`)"
              if cpu_fitted else "no CPU fit exists (too few cpu.csv rows), so the fitted model's Q_r and C are "
              "NaN where delta > 0 too")
    return ("Q_r = cpu for both costs: extra compute relative to the monolith in monolith-equivalents "
            "(`Q_r_compute`: the services' CPU plus the emulated work they slept, per workflow, over the "
            "monolith's; docs/model.md); measured, each run's; " + fitted + "; the configured model has no CPU "
            "costs, so its Q_r and C are NaN where delta > 0.")
