"""The registry of metric names: every metric the harness models or measures, written once, with its unit, what
predicts it and what it means.

Before this table the names were written six times (the model's fields, the run's compared metrics, the bus
model's columns, the fit's metrics, the report's flagged metrics and summary.csv's columns), and a metric added
in one place was silently missing from the others. Each of those lists is now a selection of `REGISTRY` by one
of its flags, in the registry's order, which is the order of summary.csv's columns.

This module imports nothing of the harness, so the model, the measurements, the analysis and the command line
may all read it without crossing a seam (pyproject.toml's import contracts).
"""

from __future__ import annotations

from dataclasses import dataclass

RESOURCE_UNITS = ("instances", "monolith-equiv.")
"""Eq 10's resource metrics (Q_r) are counted, not timed: summary.csv keeps them after the CPU figures."""


@dataclass(frozen=True)
class Metric:
    """One metric: its name (the paper's symbol), paper unit, meaning, and where it is modelled and measured."""

    name: str
    unit: str
    meaning: str
    paper: bool
    """The paper's model gives it (Eqs 1-10, a field of `harness.model.Metrics`)."""
    bus: bool
    """summary.csv holds the bus-aware model's figure beside the paper's (`<name>_model_bus`, harness.model.bus)."""
    measured: str
    """summary.csv's column of what a run measured ("": no run measures it on its own)."""
    compared: bool
    """A model is held against the measurement: model_error.csv's rows; where it is the paper's, every run's
    table and summary.csv's `<name>_model` beside `<name>_measured`."""
    flagged: bool
    """report.md lists the points where the model lies outside the measured 95% interval of its mean: the
    workflow times and Eq 10's terms (Q_r in compute, the `cpu` rule's)."""

    @property
    def model_column(self) -> str:
        """summary.csv's and points.csv's column of the paper's model (configured parameters)."""
        return f"{self.name}_model"

    @property
    def bus_column(self) -> str:
        return f"{self.name}_model_bus"

    @property
    def resource(self) -> bool:
        return self.unit in RESOURCE_UNITS

    def run_columns(self) -> list[str]:
        """summary.csv's columns of a timed or bandwidth metric: what the run measured, then the model where
        the run compares the two or the model alone gives it (t_l; t_m's model is z's sum of t_i, no
        prediction)."""
        measured = [self.measured] if self.measured else []
        return measured + ([self.model_column] if self.paper and (self.compared or not self.measured) else [])


REGISTRY: tuple[Metric, ...] = (
    Metric("t_m", "s", "the monolith's workflow time: the tasks alone, no network, no orchestration",
           paper=True, bus=False, measured="t_m_measured", compared=False, flagged=False),
    Metric("t_c", "s", "the design's workflow time without a fault (Eqs 2, 6)",
           paper=True, bus=True, measured="t_c_measured", compared=True, flagged=True),
    Metric("t_l", "s", "the time a crash adds to a workflow: detection plus the work redone (Eqs 3, 7)",
           paper=True, bus=False, measured="", compared=False, flagged=False),
    Metric("t_r", "s", "the workflow time with a crash at the worst moment: t_c + t_l",
           paper=True, bus=True, measured="t_r_measured", compared=True, flagged=True),
    Metric("R_a", "ratio", "availability ratio t_c / t_m (Eq 1): what the design costs in workflow time",
           paper=True, bus=False, measured="R_a_measured", compared=True, flagged=True),
    Metric("R_r", "ratio", "recovery ratio t_r / t_c (Eq 1): what a crash costs in workflow time",
           paper=True, bus=False, measured="R_r_measured", compared=True, flagged=True),
    Metric("B_op", "kB/s", "operational bandwidth: requests, task calls and replies, hops (Eqs 5, 9)",
           paper=True, bus=True, measured="B_op_measured", compared=True, flagged=False),
    Metric("B_rel", "kB/s", "reliability bandwidth: heartbeats, state shares, 'done' messages (Eqs 4, 8)",
           paper=True, bus=True, measured="B_rel_measured", compared=True, flagged=False),
    Metric("B_tot", "kB/s", "total bandwidth B_op + B_rel, Eq 10's bandwidth term",
           paper=True, bus=True, measured="B_tot_measured", compared=True, flagged=True),
    Metric("Q_r", "instances", "extra instances beyond the monolith's one, Eq 10's resource term as printed",
           paper=True, bus=False, measured="instances_extra", compared=False, flagged=False),
    Metric("Q_r_compute", "monolith-equiv.", "extra compute beyond the monolith's, in monolith-equivalents "
           "(docs/model.md; predicted only by the fitted CPU costs, harness.model.compute)",
           paper=False, bus=False, measured="Q_r_compute", compared=True, flagged=True),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in REGISTRY}

PAPER: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.paper)
"""The fields of harness.model.Metrics: what Eqs 1-10 give."""
COMPARED: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.paper and m.compared)
"""Measured beside the paper's model in every run (summary.csv, the run's table)."""
BUS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.bus)
"""summary.csv's `<metric>_model_bus`."""
ERRORS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.compared)
"""model_error.csv's rows: the run's compared metrics, and Q_r in compute against the fitted CPU costs."""
FLAGGED: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.flagged)
"""report.md's interval check."""
UNITS: dict[str, str] = {m.name: m.unit for m in REGISTRY}
COST_TERMS: tuple[str, str, str, str] = ("R_a", "R_r", "B_tot", "Q_r")
"""Eq 10's terms, in the order of harness.model.cost's weights alpha, beta, gamma, delta."""


TIMED: tuple[Metric, ...] = tuple(m for m in REGISTRY if m.paper and not m.resource)
"""The paper's times, ratios and bandwidths: summary.csv's block of `_measured` and `_model` columns."""


def summary_columns() -> list[str]:
    """summary.csv's measured and modelled columns of the TIMED metrics, in the registry's order."""
    return [c for m in TIMED for c in m.run_columns()]
