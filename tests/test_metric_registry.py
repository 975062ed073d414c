"""The metric registry (harness.model.registry) is the one list of metric names: every list the model, the run's
tables, the fit and the report use is a selection of it, and the tables' columns stay what they were."""

from __future__ import annotations

import dataclasses

from harness import model
from harness.analysis import fit, report
from harness.measure import summary
from harness.model import bus, registry
from harness.plan import config


def test_the_model_gives_exactly_the_paper_metrics() -> None:
    fields = [f.name for f in dataclasses.fields(model.Metrics)]
    assert [f for f in fields if f not in ("design", "mechanism", "C")] == list(registry.PAPER)


def test_every_design_has_its_equations() -> None:
    assert tuple(model.EQUATIONS) == config.DESIGNS


def test_the_selections_are_the_lists_they_replace() -> None:
    assert model.COMPARED == ("t_c", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot")
    assert bus.BUS_COLUMNS == ("t_c", "t_r", "B_op", "B_rel", "B_tot")
    assert fit.METRIC_NAMES == ("t_m", "t_c", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot", "Q_r")
    assert fit.ERROR_METRICS == ("t_c", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot", "Q_r_compute")
    assert report.FLAGGED == ("t_c", "t_r", "R_a", "R_r", "B_tot", "Q_r_compute")


def test_summary_columns_of_the_metrics_are_unchanged() -> None:
    cols = summary.SUMMARY_COLUMNS
    start = cols.index("t_m_measured")
    assert cols[start: cols.index("harness_cpu_share")] == [
        "t_m_measured", "t_c_measured", "t_c_model", "t_l_model", "t_r_measured", "t_r_model", "R_a_measured",
        "R_a_model", "R_r_measured", "R_r_model", "B_op_measured", "B_op_model", "B_rel_measured", "B_rel_model",
        "B_tot_measured", "B_tot_model", "t_c_model_bus", "t_r_model_bus", "B_op_model_bus", "B_rel_model_bus",
        "B_tot_model_bus", "broker_suspicions", "broker_recovery", "cpu_ratio_to_monolith", "Q_r_model",
        "instances_extra", "Q_r_compute", "host_busy", "host_busy_p90", "host_full", "saturated",
        "clock_uncertainty", "wire_source", "wire_vs_service_op", "wire_vs_service_state",
        "header_bytes_per_message"]


def test_every_measured_column_is_in_summary_and_every_metric_has_a_known_unit() -> None:
    for m in registry.REGISTRY:
        assert m.unit in ("s", "ratio", "kB/s", *registry.RESOURCE_UNITS), m.name
        assert m.meaning, m.name
        assert not m.measured or m.measured in summary.SUMMARY_COLUMNS, m.name
        assert not m.bus or m.bus_column in summary.SUMMARY_COLUMNS, m.name


def test_one_workflow_time_out() -> None:
    z = config.Experiment(design="centralised", time_scale=0.5)
    assert model.workflow_timeout(z) == 60 + 10 * model.evaluate(z).t_c * 0.5
