"""What `harness run` shows while it works and when it is done: progress, then measured beside modelled."""

from __future__ import annotations

import asyncio
import io
import math
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness import checker
from harness.experiment import outdir
from harness.model import registry
from harness.plan.config import Experiment


def default_out(z: Experiment) -> Path:
    """results/<time>-<design>-<fault>: a new folder per run, sorted by when it started."""
    return Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{z.design}-{z.fault}"


def report_run(z: Experiment, out: str | None, load: str) -> None:
    """Run z into `out` with a progress bar, then print measured beside modelled and the verdict. `harness run`
    has settled whether z fits this machine (harness.plan.capacity) before calling it, so a refusal is one line
    before the header, a folder or a process."""
    from harness.cli import stackdump
    from harness.experiment.run import experiment  # the whole runner: imported once a run is sure to start

    stackdump.install()  # kill -USR1: where a run that seems stuck is
    console = Console(stderr=True)
    target = Path(out) if out else outdir.new_folder(default_out(z))
    what = f"target {z.target}" if z.target else f"{z.design} ({z.mechanism})"
    aimed = f" at {', '.join(z.fault_target)}" if z.fault_target else ""
    console.print(f"harness run: {what}, fault {z.fault}{aimed} at {z.fault_at}, "
                  f"{z.requests} requests, time_scale {z.time_scale} -> {target}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("workflows completed", total=z.requests)
        try:
            result = asyncio.run(experiment(
                z, target, load=load, say=lambda m: console.print(m), fresh=out is None,
                on_progress=lambda done, total: progress.update(task, completed=done)))
        except KeyboardInterrupt:
            console.print(f"interrupted: everything torn down; partial results kept in {target}")
            raise SystemExit(130) from None
    click.echo(summary_table(result.summary))
    click.echo(f"{verdict_line(result.verdict, result.summary)}; results in {result.out}")


def verdict_line(v: checker.Verdict, row: dict) -> str:
    """One line a reliability engineer reads first: pass / fail / unknown, why (docs/checker.md), and what each
    count was."""
    gaps = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in v.holes.items() if n)
    refused = _number(row.get("refused"))
    inside = (f", tasks re-run {v.reexecuted_tasks}, takeovers {v.takeovers}, false suspicions "
              f"{row['false_suspicions']}" if not _black_box(row) else  # what a client saw: no events from inside
              f", failed {row.get('failed', 0)}, indeterminate {row.get('indeterminate', 0)}")
    return (f"verdict {v.status}" + (f" ({v.reason})" if v.reason else "")
            + f": {v.completed}/{v.requests} completed, lost {len(v.lost)}, duplicated "
            f"{len(v.duplicated)}" + _anomalies(v) + inside + _broker(row)
            + (f", history holes: {gaps}" if gaps else "")
            + (f", refused for want of the run's key {int(refused)}" if refused else "")
            + f"; link backend {row['link_backend']}")


def _anomalies(v: checker.Verdict) -> str:
    """The safety anomalies beside the duplicates (harness.checker.anomalies), by summary.csv's names: two owners
    driving one request at once, a task applied twice in one epoch; n/a where the history shows no owner."""
    cells = checker.anomaly_columns(v.anomalies)
    return "".join(f", {name.replace('_', ' ')} {cells[name]}" for name in checker.ANOMALY_COLUMNS)


def _broker(row: dict) -> str:
    """On the bus: peers declared dead because of the broker (no false suspicions: a shared broker's real
    cost), and how long the services took to reconnect once it was back (paper s)."""
    if not _on_bus(row):
        return ""
    suspicions, recovery = _number(row.get("broker_suspicions")), _number(row.get("broker_recovery"))
    return (f", broker suspicions {0 if suspicions is None else int(suspicions)}"
            + (f", broker recovery {recovery:.3g} s" if recovery is not None else ""))


def _black_box(row: dict) -> bool:
    """A target file's orchestrator measured from outside only (harness.measure.blackbox: "n/a" cells)."""
    return row.get("reexecuted_tasks") == "n/a"


def target_table(row: dict) -> str:
    """What a black-box run measured: the client's times and the wire's bytes, the model beside them where
    the target file gave the paper's parameters."""
    table = Table(title="measured from outside", caption="paper units: s, kB/s; n/a: needs the target's events")
    for col in ("metric", "measured", "model", "error"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for name in registry.COMPARED:
        metric = registry.BY_NAME[name]
        meas, mod = row[metric.measured], row[metric.model_column]
        ref = _number(mod)
        table.add_row(name, _fmt(meas), "-" if ref is None else _fmt(ref),
                      _error(meas, ref) if isinstance(meas, float) else "-")
    for name in ("failed", "indeterminate", "client_actions", "end_states"):
        table.add_row(name, str(row.get(name, 0)) or "-", "", "")
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def summary_table(row: dict) -> str:
    if _black_box(row):
        return target_table(row)
    bus = _on_bus(row)  # the bus-aware model beside the paper's
    table = Table(title="measured vs model", caption="paper units: s, kB/s")
    for col in ("metric", "measured", "model", "error", *(("bus model", "error") if bus else ())):
        table.add_column(col, justify="right" if col != "metric" else "left")
    blank = ("",) * (2 if bus else 0)
    t_m, t_c, r_a = (registry.BY_NAME[m] for m in ("t_m", "t_c", "R_a"))  # the model's t_m: t_c / R_a (Eq 1)
    table.add_row("t_m", _fmt(row[t_m.measured]), _fmt(row[t_c.model_column] / row[r_a.model_column]), "", *blank)
    # the model's t_r and R_r are the worst case: a fault struck elsewhere is expected to recover faster
    off_worst = row.get("fault") not in (None, "", "none") and row.get("fault_at") not in (None, "", "worst")
    for name in registry.COMPARED:
        metric = registry.BY_NAME[name]
        meas = row[metric.measured]
        cells = [_fmt(meas)]
        for mod in (row[metric.model_column], *((row.get(metric.bus_column),) if bus else ())):
            ref = _number(mod)
            cells += ["-" if ref is None else _fmt(ref), _error(meas, ref)]
        label = f"{name} (fault at {row['fault_at']}; model: worst case)" if off_worst and name in ("t_r", "R_r") \
            else name
        table.add_row(label, *cells)
    # The paper's Q_r counts extra instances; this project's Q_r_compute is extra compute in monolith-
    # equivalents (docs/model.md); only a fitted model predicts it (`harness fit`: CPU costs), hence no model.
    q_r, q_r_compute = registry.BY_NAME["Q_r"], registry.BY_NAME["Q_r_compute"]
    table.add_row("Q_r", _fmt(float(row[q_r.measured])), _fmt(row[q_r.model_column]), q_r.unit, *blank)
    table.add_row("Q_r compute", _fmt(row[q_r_compute.measured]), "-", q_r_compute.unit, *blank)
    # the saturation flag beside the statistic it is decided on (metrics.saturated: the share of the measured
    # load with every core busy), and the mean busy figure on its own row
    full, busy = _number(row.get("host_full")), _number(row.get("host_busy"))
    table.add_row("host CPU full", "-" if full is None else f"{full:.0%} of load", "",
                  "SATURATED" if row.get("saturated") is True else "", *blank)
    table.add_row("host CPU busy", "-" if busy is None else f"{busy:.0%} mean", "", "", *blank)
    clock = _number(row.get("clock_uncertainty"))
    if clock is not None:  # events from several hosts' clocks (swarm): what the offsets' uncertainty bounds
        table.add_row("clock offsets", f"+-{clock * 1e3:.2f} ms", "", "wall", *blank)
        table.add_row("  bounds", f"+-{2 * clock / row['time_scale']:.4f} s", "", "detection delay (paper)", *blank)
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def _on_bus(row: dict) -> bool:
    """Whether the run was on the bus: summary.csv's bus-aware model is written empty on http."""
    return _number(row.get(registry.BY_NAME["t_c"].bus_column)) is not None


def _number(v: object) -> float | None:
    """A finite number, or None (empty on http, NaN where there is nothing to compare)."""
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _error(measured: float, model_value: float | None) -> str:
    if not model_value or math.isnan(measured):
        return "-"
    return f"{(measured - model_value) / model_value:+.1%}"


def _fmt(v: float | str | None) -> str:
    """A figure, "-" when missing, or the text a figure that cannot be had says instead ("n/a": it needs the
    target's events, harness.measure.blackbox)."""
    if isinstance(v, str):
        return v
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
