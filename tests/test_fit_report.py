"""`harness fit`, `harness optimise DIR` and `harness report` on real sweeps: the CI variants of the Fig 6, 7
and 8 specs run here, and what they measured must show the paper's trends; the fit must recover the link
latency the proxy put on the links."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from harness import model
from harness.analysis import figures, fit, qr, report, tables
from harness.cli.commands import cli
from harness.cli.sweep_progress import run_sweep
from harness.errors import UserError
from harness.experiment.sweep import read_rows
from harness.measure import cpu, metrics, summary
from harness.model import compute
from harness.plan import config

ROOT = Path(__file__).resolve().parents[1]


# --- the fit's least squares on synthetic timings ------------------------------------------------------------


def synthetic(p: float, o: float, scales: list[float], cfg: float = 0.05, n: int = 30) -> list[fit.Obs]:
    """y = p ts + o with a little deterministic noise, at each time scale."""
    return [fit.Obs("l_a", ts, cfg, p * ts + o + 1e-4 * math.sin(7 * i), 1) for ts in scales for i in range(n)]


def test_two_time_scales_separate_latency_from_the_per_message_cost():
    fam = fit.fit_family("l_a", "offset", synthetic(0.05, 0.003, [0.1, 0.3]))
    assert fam.identified
    value, err, count = fam.p[0.05]
    assert value == pytest.approx(0.05, rel=0.01) and err < 0.001 and count == 60
    assert fam.o[0] == pytest.approx(0.003, abs=1e-4)
    assert fam.effective(0.05, 0.1) == pytest.approx(0.05 + 0.003 / 0.1, rel=0.01)


def test_one_time_scale_gives_the_effective_value():
    fam = fit.fit_family("l_a", "offset", synthetic(0.05, 0.003, [0.1]))
    assert not fam.identified and fam.o[0] == 0
    assert fam.p[0.05][0] == pytest.approx(0.05 + 0.003 / 0.1, rel=0.01)  # the overhead is folded in
    assert fam.effective(0.05, 0.1) == pytest.approx(0.08, rel=0.01)


def test_a_few_outliers_do_not_drag_the_fit():
    obs = synthetic(0.05, 0.003, [0.1, 0.3])
    for o in obs[::15]:
        o.y += 0.02  # a busy CPU delayed a few messages by 20 ms
    assert fit.fit_family("l_a", "offset", obs).p[0.05][0] == pytest.approx(0.05, rel=0.05)


def test_a_scale_family_fits_factor_and_overhead():
    obs = [fit.Obs("t_i", 0.1, t, 1.01 * t * 0.1 + 0.002, 1) for t in (1.0, 2.0, 5.0) for _ in range(5)]
    fam = fit.fit_family("t_i", "scale", obs)
    assert fam.a[0] == pytest.approx(1.01, rel=1e-3) and fam.o[0] == pytest.approx(0.002, abs=1e-5)


def test_the_statistics_over_repeats_give_a_students_t_interval_and_none_below_two_values():
    frame = pd.DataFrame({"point": ["a", "a", "a", "b", "c", "c"], "x": [1.0, 2.0, 6.0, 4.0, math.inf, 5.0]})
    stats = tables.over_repeats(frame, "point", ["x"])
    assert list(stats.index) == ["a", "b", "c"]
    a = stats.loc["a"]
    assert (a["x_mean"], a["x_min"], a["x_max"]) == (3.0, 1.0, 6.0)
    half = 4.302653 * a["x_std"] / math.sqrt(3)  # t(0.975, 2)
    assert a["x_ci95_lo"] == pytest.approx(3 - half) and a["x_ci95_hi"] == pytest.approx(3 + half)
    for point in ("b", "c"):  # one value (c's infinity is no value): no spread, no interval
        assert stats.loc[point, "x_mean"] in (4.0, 5.0)
        assert all(math.isnan(stats.loc[point, f"x_{s}"]) for s in ("std", "ci95_lo", "ci95_hi"))


def hand_made_points(saturated: tuple[int, int] = (0, 0)) -> pd.DataFrame:
    """Two points whose instance counts and compute ratios rank them in opposite orders; the other metrics equal."""
    same = {f"{m}_{kind}": v for m, v in (("R_a", 1.1), ("R_r", 1.5), ("B_tot", 100.0))
            for kind in ("mean", "model", "fitted")}
    return pd.DataFrame([
        {"point": "few-instances-much-cpu", "design": "centralised", "mechanism": "state-sharing", "n": 2,
         "time_scale": 0.2, "repeats": 1, "instances_extra": 3.0, "Q_r_model": 3.0, "Q_r_fitted": 3.0,
         "Q_r_mean": 40.0, "Q_r_compute_mean": 0.40, "Q_r_compute_fitted": 0.38, "saturated": saturated[0], **same},
        {"point": "many-instances-little-cpu", "design": "centralised", "mechanism": "state-sharing", "n": 6,
         "time_scale": 0.2, "repeats": 1, "instances_extra": 7.0, "Q_r_model": 7.0, "Q_r_fitted": 7.0,
         "Q_r_mean": 10.0, "Q_r_compute_mean": 0.10, "Q_r_compute_fitted": 0.11, "saturated": saturated[1],
         **same}])


@pytest.mark.parametrize("rule", qr.QR_RULES)
def test_measured_and_modelled_cost_take_q_r_by_the_same_rule(rule):
    w = (0.0, 0.0, 0.0, 1.0)  # C = Q_r: each cost shows the Q_r it used
    rows = fit.cost_table(hand_made_points(), w, ["n"], rule).set_index("point")
    measured = {"instances": {"few-instances-much-cpu": 3.0, "many-instances-little-cpu": 7.0},
                "cpu": {"few-instances-much-cpu": 0.40, "many-instances-little-cpu": 0.10}}[rule]
    fitted = {"instances": measured, "cpu": {"few-instances-much-cpu": 0.38, "many-instances-little-cpu": 0.11}}[rule]
    assert rows["C_measured"].to_dict() == measured and rows["Q_r"].to_dict() == measured
    assert rows["C_model_fitted"].to_dict() == fitted and rows["Q_r_fitted"].to_dict() == fitted
    # the same rule ranks alike on both sides: mixing (measured cpu, model instances) would reverse one
    assert rows["rank"].to_dict() == rows["rank_model"].to_dict()
    if rule == "instances":
        assert rows["C_model"].to_dict() == measured
    else:  # the configured model has no CPU figure: no cost where delta > 0, never an instance count instead
        assert rows["C_model"].isna().all()
        assert fit.cost_table(hand_made_points(), (1.0, 0.0, 0.0, 0.0), ["n"], rule)["C_model"].notna().all()
    assert rows.loc["few-instances-much-cpu", "C_measured"] == model.cost(w, 1.1, 1.5, 100.0, measured[
        "few-instances-much-cpu"])
    # Fig 8's per-trial cost takes the same column as the ranking's measured side (never the raw CPU ratio)
    trials = pd.DataFrame({"R_a_measured": [1.1], "R_r_measured": [1.5], "B_tot_measured": [100.0],
                           "instances_extra": [3.0], "cpu_ratio_to_monolith": [41.0], "Q_r_compute": [0.40]})
    assert figures.trial_cost(trials, w, rule).iloc[0] == measured["few-instances-much-cpu"]


def test_the_fitted_model_predicts_q_r_compute_from_z_on_the_measured_definition():
    """The model's W is the measured side's W, and O is the CPU costs times the activity it expects: with no
    overhead at all both are the configured work's ratio, (t_m + (n+1) t_o) / t_m - 1."""
    z = config.build({"design": "centralised", "n": 4, "t_i": 2.0, "t_o": 0.1, "fault": "slm-crash"})
    free = compute.CpuCosts(0.0, 0.0, 0.0, 0.0)
    assert compute.q_r_compute(z, free, 10.0, 14.0) == pytest.approx(5 * 0.1 / 8)
    costly = compute.CpuCosts(0.001, 0.001, 0.001, 0.01)
    act = compute.activity(z, 10.0, 14.0)
    assert act.crash < act.window and act.heartbeats > 0 and act.messages > z.requests * 4 * z.n
    more_hb = compute.activity(z.model_copy(update={"h_r": 2 * z.h_r}), 10.0, 14.0)
    assert more_hb.heartbeats == pytest.approx(2 * act.heartbeats)
    assert compute.q_r_compute(z, costly, 10.0, 14.0) > compute.q_r_compute(z, free, 10.0, 14.0)
    # the measured side: W configured, plus what the services burnt beyond the work (none here) per workflow
    assert metrics.compute_per_workflow({}, {}, [], z, 3) == pytest.approx(compute.work_per_workflow(z) * z.time_scale)
    burn = z.model_copy(update={"work": "burn"})
    started = [{"kind": "task_start", "svc": "m1", "task": 1, "t": 0.0}]
    burnt = 2.0 * burn.time_scale  # t_1 burnt by m1: not overhead
    assert metrics.overhead_cpu({"m1": (burnt + 0.01, 0.0)}, started, burn)["m1"] == pytest.approx(0.01)
    assert metrics.overhead_cpu({"m1": (burnt + 0.01, 0.0)}, started, z)["m1"] == pytest.approx(burnt + 0.01)


# --- the saturation guard ------------------------------------------------------------------------------------


def test_a_saturated_host_is_flagged_in_the_summary_columns():
    # every core busy for 3 of 4 one-second intervals: saturated; half busy throughout: not
    full = [(float(t), 2.0 * min(t, 3) + 1.0 * max(0, t - 3)) for t in range(5)]  # busy core-seconds, 2 cores
    hot = cpu.host_summary(full, 2)
    assert hot["full"] == pytest.approx(0.75) and hot["busy"] == pytest.approx(0.875) and hot["seconds"] == 4
    half = cpu.host_summary([(float(t), 1.0 * t) for t in range(5)], 2)
    assert half["busy"] == pytest.approx(0.5) and half["full"] == 0
    assert summary.host_columns(hot)["saturated"] is True and summary.host_columns(half)["saturated"] is False
    assert summary.host_columns({})["saturated"] == ""  # a folder from before the guard: not known
    assert cpu.host_summary([(0.0, 0.0), (0.01, 0.02)], 2) == {}  # one tick is no interval


def test_a_saturated_point_is_left_out_of_the_optimum_unless_asked_for():
    w = (0.0, 0.0, 0.0, 1.0)
    hot = hand_made_points(saturated=(0, 1))  # the cheaper point ran on a saturated host
    rows = fit.cost_table(hot, w, ["n"], "cpu").set_index("point")
    assert rows.loc["many-instances-little-cpu", "rank"] == 2 and rows.loc["few-instances-much-cpu", "rank"] == 1
    assert list(rows["rank"]) == list(rows["rank_model"])  # the fitted model's ranking leaves it out too
    lines = fit.optimum_lines(fit.cost_table(hot, w, ["n"], "cpu"))
    assert "n=2" in lines[0] and "1 point(s) left out (1 measured on a saturated host)" in lines[0]
    asked = fit.cost_table(hot, w, ["n"], "cpu", include_saturated=True).set_index("point")
    assert asked.loc["many-instances-little-cpu", "rank"] == 1
    trials = pd.DataFrame({"trial": ["a-r1", "b-r1"], "saturated": [False, True], "host_busy": [0.4, 0.99],
                           "host_full": [0.0, 0.9]})
    (line,) = report._saturation_lines(trials, include_saturated=False)
    assert "saturated (>= 25% of the load): 1 of 2 trial(s)" in line and "left out of their points' costs" in line
    assert "b-r1 (90% of the load full, 99% mean busy)" in line  # the flag's statistic first, named
    assert "every core >= 95% busy for 45% of the load (median over trials), 90% max" in line


def hand_made_trials(saturated: dict[str, list[bool]], q_r: dict[str, list[float]]) -> pd.DataFrame:
    """trials.csv-like rows of hand_made_points' two points: equal R_a, R_r, B_tot; Q_r_compute as given."""
    return pd.DataFrame([{"point": point, "trial": f"{point}-r{k + 1}", "R_a_measured": 1.1, "R_r_measured": 1.5,
                          "B_tot_measured": 100.0, "instances_extra": 3.0, "Q_r_compute": q, "saturated": hot}
                         for point in q_r for k, (q, hot) in enumerate(zip(q_r[point], saturated[point], strict=True))])


def test_a_saturated_trial_leaves_its_points_mean_not_the_point():
    """With the trials, a saturated repeat is dropped from its point's cost while the other repeats count; a
    point goes behind the others only when all its repeats saturated; C carries a Student's t interval."""
    w = (0.0, 0.0, 0.0, 1.0)  # C = Q_r_compute
    points = hand_made_points().assign(repeats=2)
    trials = hand_made_trials({"few-instances-much-cpu": [False, False], "many-instances-little-cpu": [True, False]},
                              {"few-instances-much-cpu": [0.40, 0.42], "many-instances-little-cpu": [0.90, 0.10]})
    rows = fit.cost_table(points, w, ["n"], "cpu", trials=trials).set_index("point")
    assert rows.loc["many-instances-little-cpu", "C_measured"] == pytest.approx(0.10)  # 0.90 on the hot host: out
    assert rows.loc["many-instances-little-cpu", "rank"] == 1 and rows.loc["many-instances-little-cpu", "left_out"] == 1
    lo, hi = rows.loc["few-instances-much-cpu", ["C_ci95_lo", "C_ci95_hi"]]
    assert lo < 0.41 < hi and hi - lo == pytest.approx(2 * 12.706 * 0.01, rel=1e-3)  # 2 t(.975, 1) s / sqrt 2
    assert math.isnan(rows.loc["many-instances-little-cpu", "C_ci95_lo"])  # one counted repeat: no interval
    asked = fit.cost_table(points, w, ["n"], "cpu", include_saturated=True, trials=trials).set_index("point")
    assert asked.loc["many-instances-little-cpu", "C_measured"] == pytest.approx(0.50)
    assert asked.loc["few-instances-much-cpu", "rank"] == 1
    all_hot = hand_made_trials({"few-instances-much-cpu": [False, False], "many-instances-little-cpu": [True, True]},
                               {"few-instances-much-cpu": [0.40, 0.42], "many-instances-little-cpu": [0.10, 0.10]})
    rows = fit.cost_table(points, w, ["n"], "cpu", trials=all_hot).set_index("point")
    assert rows.loc["many-instances-little-cpu", "rank"] == 2 and not rows.loc["many-instances-little-cpu", "counted"]


def test_where_the_model_picks_another_point_the_optimum_says_whether_the_measurement_can_tell_them_apart():
    w = (0.0, 0.0, 0.0, 1.0)
    points = hand_made_points().assign(repeats=2)  # the fitted model prefers many-instances-little-cpu (0.11)

    def overall(q_r: dict[str, list[float]]) -> str:
        trials = hand_made_trials({p: [False, False] for p in q_r}, q_r)
        (line,) = fit.optimum_lines(fit.cost_table(points, w, ["n"], "cpu", trials=trials))
        return line  # one design: its line is the overall optimum too, said once

    # measured: few-instances 0.39 +- 0.01, many-instances 0.40 +- 0.2: the intervals overlap
    tie = overall({"few-instances-much-cpu": [0.38, 0.40], "many-instances-little-cpu": [0.20, 0.60]})
    assert tie.startswith("optimum centralised (state-sharing) (the only design swept, so also the overall optimum): "
                          "measured best n=2, C = 0.39")
    assert "the fitted model's best measured point: n=6" in tie
    assert tie.endswith("a tie within the measured 95% intervals")
    apart = overall({"few-instances-much-cpu": [0.100, 0.101], "many-instances-little-cpu": [0.300, 0.301]})
    assert apart.endswith("outside the measured 95% intervals")
    agree = overall({"few-instances-much-cpu": [0.40, 0.41], "many-instances-little-cpu": [0.10, 0.11]})
    assert agree.endswith("the same, the model agrees")


def test_an_unknown_q_r_rule_is_refused():
    with pytest.raises(UserError, match="--qr: expected one of cpu, instances"):
        fit.cost_table(hand_made_points(), (0, 0, 0, 1), ["n"], "watts")


def test_fit_report_and_optimise_refuse_a_folder_that_is_no_sweep(tmp_path):
    with pytest.raises(UserError, match="not a sweep folder"):
        fit.fit_dir(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert isinstance(result.exception, UserError)
    (tmp_path / "sweep.yaml").write_text("spec: {}\npoints: []\n")
    (tmp_path / "trials.csv").write_text("run,trial\n")
    with pytest.raises(UserError, match="no finished trials"):
        fit.fit_dir(tmp_path)


# --- the CI variants of the figure specs, for real --------------------------------------------------------------


class _Sweeps(dict):
    """experiments/<name>.yaml swept (and fitted and reported) the first time a test asks for it."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def __missing__(self, name: str) -> Path:
        out = self.base / name
        outcome = run_sweep(str(ROOT / "experiments" / f"{name}.yaml"), out, load="builtin", jobs=1)
        assert outcome.finished == len(read_rows(out / "trials.csv")) and not outcome.failed
        report.build_report(out)
        self[name] = out
        return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> _Sweeps:
    """The CI variants of the figure specs (about 30-45 s each), run on first use."""
    return _Sweeps(tmp_path_factory.mktemp("figs"))


def points(folder: Path) -> list[dict[str, str]]:
    with (folder / "points.csv").open() as fh:
        return list(csv.DictReader(fh))


def pick(rows: list[dict[str, str]], **match) -> dict[str, float]:
    (row,) = [r for r in rows if all(float(r[k]) == v if isinstance(v, int | float) else r[k] == v
                                       for k, v in match.items())]
    return {k: float(v) if _isnum(v) else math.nan for k, v in row.items()}


def _isnum(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_fig6_r_r_falls_with_h_r_with_diminishing_gain_after_1(sweeps):
    rows = points(sweeps["fig6-ci"])
    r = {h: pick(rows, h_r=h)["R_r_mean"] for h in (0.25, 1.0, 4.0)}
    assert r[0.25] > r[1.0] > r[4.0] > 1
    # 4x the rate buys less above 1 than below (model: 4x less; measured less so, as the crash at h_r = 0.25
    # often takes the heartbeat it was aimed after with it: docs/analysis.md, known limits)
    assert r[0.25] - r[1.0] > r[1.0] - r[4.0]
    b = [pick(rows, h_r=h)["B_tot_mean"] for h in (0.25, 1.0, 4.0)]
    assert max(b) / min(b) < 1.1  # heartbeats are a small part of B_tot


@pytest.mark.slow
def test_fig7_r_r_falls_and_r_a_rises_with_n_and_sharing_more_often_recovers_faster(sweeps):
    rows = points(sweeps["fig7-ci"])
    ts = fit.primary_scale(pd.DataFrame({"time_scale": [float(r["time_scale"]) for r in rows]}))
    rows = [r for r in rows if float(r["time_scale"]) == ts]
    n2, n6 = pick(rows, n=2, s_p=1), pick(rows, n=6, s_p=1)
    assert n2["R_r_mean"] > n6["R_r_mean"] + 0.1
    assert n2["R_a_mean"] < n6["R_a_mean"]
    assert pick(rows, n=6, s_p=1)["R_r_mean"] < pick(rows, n=6, s_p=3)["R_r_mean"] - 0.1


@pytest.mark.slow
def test_fig8_optima_follow_the_weights(sweeps):
    rows = points(sweeps["fig8-ci"])
    for design in ("centralised", "distributed"):
        assert pick(rows, n=2, design=design)["R_r_mean"] > pick(rows, n=6, design=design)["R_r_mean"] + 0.1
    # (the distributed R_a grows by 2 hops' latency only, 1.01 -> 1.03 in the model: within the noise here)
    assert pick(rows, n=2, design="centralised")["R_a_mean"] < pick(rows, n=6, design="centralised")["R_a_mean"]
    # every trial counted: these tests hold the ranking; the saturation guard has hand-made tests above, and
    # here a busy CI host (another test worker beside these trials) would flag trials and leave them out
    recovery, _ = fit.optimise_measured(sweeps["fig8-ci"], (0, 1, 0, 0), include_saturated=True)
    resources, note = fit.optimise_measured(sweeps["fig8-ci"], (0.1, 0.1, 0.001, 0.01), rule="instances",
                                            include_saturated=True)
    for design in ("centralised", "distributed"):
        assert recovery[recovery["design"] == design].sort_values("rank").iloc[0]["n"] == 6
        assert resources[resources["design"] == design].sort_values("rank").iloc[0]["n"] == 2
    assert {"C_measured", "C_model_fitted", "rank_model", "Q_r", "Q_r_fitted"} <= set(recovery.columns)
    assert note.startswith("Q_r = instances for both costs")


@pytest.mark.slow
@pytest.mark.parametrize("rule", qr.QR_RULES)
def test_optimise_ranks_the_measured_points_in_the_fitted_models_order_for_resources(sweeps, rule):
    result = CliRunner().invoke(cli, ["optimise", str(sweeps["fig8-ci"]), "--weights",
                                                        "0.1,0.1,0.001,0.01", "--qr", rule, "--format", "csv",
                                 "--include-saturated"])  # the ranking, every trial counted (as above)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(io.StringIO(result.output))
    costed = rows[rows["C_measured"].notna()]
    assert list(rows["rank"]) == [1, 2, 3, 4] and costed["C_measured"].is_monotonic_increasing
    assert len(costed) == 4  # Q_r_compute has a value with `work: sleep` too (the configured work is counted)
    assert list(costed["rank"]) == list(costed["rank_model"])  # the same Q_r: the same order
    # CPU per event rises on a contended host (seen: distributed n = 6 at 0.24 measured, 0.18 fitted, load 11)
    assert (costed["Q_r"] - costed["Q_r_fitted"]).abs().max() <= 0.3 * costed["Q_r"].abs().max()
    if rule == "instances":
        assert list(rows["Q_r"]) == list(rows["Q_r_fitted"])


@pytest.mark.slow
def test_optimise_ranks_by_compute_alone_in_the_fitted_models_order(sweeps):
    """C = Q_r_compute: the measured ranking is the CPU fit's prediction from z (distributed n = 2 cheapest:
    two twins' heartbeats and no orchestrator steps; centralised n = 6 dearest: 7 t_o and 6 calls a workflow)."""
    rows, note = fit.optimise_measured(sweeps["fig8-ci"], (0, 0, 0, 1), rule="cpu", include_saturated=True)
    assert list(rows["rank"]) == list(rows["rank_model"]), rows[["point", "Q_r", "Q_r_fitted"]]
    assert rows.iloc[0]["design"] == "distributed" and rows.iloc[0]["n"] == 2
    assert rows.iloc[-1]["design"] == "centralised" and rows.iloc[-1]["n"] == 6
    assert note.startswith("Q_r = cpu for both costs: extra compute relative to the monolith")


@pytest.mark.slow
def test_fit_recovers_the_configured_link_latency(sweeps):
    folder = sweeps["fig7-ci"]
    assert {r["link_backend"] for r in read_rows(folder / "trials.csv")} == {"proxy"}
    with (folder / "fit.csv").open() as fh:
        params = {r["parameter"]: r for r in csv.DictReader(fh)}
    load = [r["host_load"] for r in read_rows(folder / "trials.csv")]
    for name in ("l_a", "l_b"):
        assert float(params[name]["value"]) == pytest.approx(float(params[name]["configured"]), rel=0.10), \
            f"{name}; host load (1-min load average) at the end of each trial: {load}"
        assert float(params[f"{name}.overhead"]["value"]) > 0  # ms of Python per message, told apart
    assert float(params["t_o"]["value"]) == pytest.approx(0.15, rel=0.10)
    assert float(params["header_bytes"]["value"]) == pytest.approx(190, rel=0.1)
    per_task = sorted(float(r["value"]) for name, r in params.items() if name.startswith("l_a+l_b (task"))
    assert len(per_task) == 6 and per_task[3] == pytest.approx(0.2, rel=0.15)  # the median task
    assert all(v == pytest.approx(0.2, rel=0.5) for v in per_task)  # task 1 carries the first, cold calls
    with (folder / "model_error.csv").open() as fh:
        errors = {r["metric"]: r for r in csv.DictReader(fh)}
    assert set(errors) == {"t_c", "t_r", "R_a", "R_r", "B_op", "B_rel", "B_tot", "Q_r_compute"}
    assert float(errors["t_c"]["after_mean"]) < float(errors["t_c"]["before_mean"])
    assert float(errors["t_c"]["after_max"]) < 0.03


@pytest.mark.slow
def test_the_report_shows_what_ran_and_skips_what_is_absent(sweeps):
    md = (sweeps["fig6-ci"] / "report.md").read_text()
    for heading in ("## What was run", "## Optimum", "## Model error", "## Figures", "## Fitted parameters"):
        assert heading in md
    assert "![Fig 6](fig6.png)" in md and "Skipped: no points that differ in n only" in md
    assert "3 finished of 3 planned" in md and "0 lost" in md and "Commit: " in md
    assert (sweeps["fig6-ci"] / "fig6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (sweeps["fig6-ci"] / "fig7.png").exists()
    md7 = (sweeps["fig7-ci"] / "report.md").read_text()
    assert "![Fig 7](fig7.png)" in md7 and "![Fig 8](fig8.png)" in md7
    assert "Skipped: no points that differ in h_r" in md7


@pytest.mark.slow
def test_the_commands_print_and_write_their_tables(sweeps, tmp_path):
    runner = CliRunner()
    folder = str(sweeps["fig8-ci"])
    result = runner.invoke(cli, ["optimise", folder, "--weights", "1,1,0.0005,0.005"])
    assert result.exit_code == 0, result.output
    assert "optimum centralised (state-sharing): measured best n=" in result.output
    assert "optimum overall:" in result.output
    assert "the fitted model's minimum over n = 2..6: " in result.output  # the model between the measured points
    assert "Q_r = cpu for both costs" in result.output
    result = runner.invoke(cli, ["optimise", folder, "--weights", "0,1,0,0", "--format", "csv",
                                                   "--qr", "instances", "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 0 and result.output.startswith("rank,design,mechanism,n,")
    assert (tmp_path / "o.csv").read_text().count("\n") == 5
    result = runner.invoke(cli, ["optimise", folder, "--weights", "1,2"])
    assert isinstance(result.exception, UserError)
    result = runner.invoke(cli, ["fit", folder, "--format", "csv"])
    assert result.exit_code == 0 and "parameter,value,stderr,configured,unit" in result.output
    result = runner.invoke(cli, ["report", folder, "--weights", "0,1,0,0"])
    assert result.exit_code == 0 and "Fig 6: skipped" in result.output
    assert "weights 1" in (sweeps["fig8-ci"] / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fig6-ci", "fig7-ci", "fig8-ci"])
def test_a_readers_check_of_the_ci_reports(sweeps, name):
    """Issue 24's acceptance on the real CI sweeps: no caption, key or legend names what is not on the page,
    report.md says nothing twice, and no optimum names a run key."""
    from test_report_reading import check_page, paragraphs  # (tests/ is on the path pytest gives its tests)

    result = report.build_report(sweeps[name])
    drawn = [f for f in result.figures if f.path]
    assert drawn
    for figure in drawn:
        check_page(figure)
    md = result.path.read_text()
    said = paragraphs(md)
    assert not {p for p in said if said.count(p) > 1}
    assert "requests=" not in md and "time_scale=" not in md and md.count("Q_r = cpu for both costs") == 1
    assert "the fitted model's minimum over" in md
