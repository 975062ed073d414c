"""The analysis commands: `harness sweep`, `harness fit` and `harness report`, and the measured half of
`harness optimise DIR`. They are `click.Command` objects that harness/cli/commands.py registers with one line each.
"""

from __future__ import annotations

from pathlib import Path

import click

from harness.analysis.qr import QR_RULES
from harness.cli.output import FORMATS, render, write_rows
from harness.errors import UserError
from harness.load import LOADS


def _sweep_dir(path: str) -> Path:
    out = Path(path)
    if not (out / "sweep.yaml").exists():
        raise UserError(f"{out} is not a sweep folder (no sweep.yaml): run `harness sweep SPEC --out {out}` first")
    return out


@click.command("sweep")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Sweep folder (default results/sweep-<spec name>). Rerun the same command to resume.")
@click.option("--repeat", type=click.IntRange(min=1), default=None, help="Runs per point (default: the spec's).")
@click.option("--jobs", default=None, metavar="auto|J",
              help="Trials run at the same time, each on its own loopback block (default: the spec's `jobs:`, "
                   "else auto: as many as the CPU headroom admits, machine-wide, at most 4 a core and 16; "
                   "MANOBENCH_SWEEP_CPU is the share of the cores they may fill, default 0.9). 1: one at a time.")
@click.option("--load", type=click.Choice(LOADS), default=None,
              help="Load generator of every trial (default: the spec's `load:`, else the folder's it resumes, "
                   "else builtin, the harness's asyncio BSS; locust: Locust in its own process).")
def sweep_cmd(spec: str, out: str | None, repeat: int | None, jobs: str | None, load: str | None) -> None:
    """Run every point of SPEC (base, grid, points, extra, repeat, load, jobs) R times into one resumable folder.

    Each finished trial is a row of DIR/trials.csv; a stopped sweep (Ctrl-C, a crash) resumes where it stopped.
    """
    from harness.cli.sweep_progress import run_sweep

    target = Path(out) if out else Path("results") / f"sweep-{Path(spec).stem}"
    run_sweep(spec, target, repeat=repeat, jobs=jobs, load=load)


@click.command("fit")
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def fit_cmd(sweep_dir: str, fmt: str) -> None:
    """Fit the model's free parameters (t_o, link latencies, overheads, CPU) to a sweep's histories.

    Writes DIR/fit.csv, DIR/model_error.csv (model vs measured, configured and fitted parameters) and
    DIR/points.csv (per point: measured mean/min/max beside both models).
    """
    from harness.analysis import fit

    result = fit.fit_dir(_sweep_dir(sweep_dir))
    click.echo(render(result.params.to_dict("records"), fmt,  # type: ignore[arg-type]
                      title=f"fitted parameters ({len(result.trials)} trials)"), nl=False)
    click.echo(render(result.errors.to_dict("records"), fmt,  # type: ignore[arg-type]
                      title="model vs measured: relative error, configured -> fitted"), nl=False)
    if fmt == "table":
        for note in result.notes:
            click.echo(f"note: {note}")
        click.echo(f"written: {Path(sweep_dir) / 'fit.csv'}, {Path(sweep_dir) / 'model_error.csv'}, "
                   f"{Path(sweep_dir) / 'points.csv'}")


def show_measured_optimum(sweep_dir: str, weights: str, *, top: int = 10, out: str | None = None,
                          fmt: str = "table", qr: str = "cpu", include_saturated: bool = False) -> None:
    """`harness optimise DIR --weights ...`: C(z) on the measured points beside the fitted model, ranked."""
    from harness.analysis import fit, optimise

    w = optimise.parse_weights(weights)
    table, note = fit.optimise_measured(_sweep_dir(sweep_dir), w, rule=qr, include_saturated=include_saturated)
    if table.empty:
        raise UserError(f"{sweep_dir}: no finished trials to rank")
    rows = table.to_dict("records")
    if out:
        write_rows(out, rows)  # type: ignore[arg-type]
    click.echo(render(rows[:top], fmt, title=f"measured C(z) with alpha,beta,gamma,delta = {weights}"),  # type: ignore[arg-type]
               nl=False)
    if fmt == "table":
        for line in [*fit.optimum_lines(table), note]:
            click.echo(line)


@click.command("report")
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--weights", "weight_sets", multiple=True, metavar="A,B,G,D",
              help="Weight sets for Fig 8 and the optimum (repeatable; default: the three of docs/analysis.md).")
@click.option("--qr", type=click.Choice(QR_RULES), default="cpu", show_default=True,
              help="Q_r of both costs, measured and modelled (see `harness optimise DIR --help`).")
@click.option("--include-saturated", is_flag=True,
              help="Keep trials whose host saturated in the optimum (they rank after the others by default).")
def report_cmd(sweep_dir: str, weight_sets: tuple[str, ...], qr: str, include_saturated: bool) -> None:
    """Plots of measured beside modelled (the paper's Figs 6, 7, 8) and DIR/report.md."""
    from harness.analysis import optimise, report

    sets = [optimise.parse_weights(w) for w in weight_sets] or None
    result = report.build_report(_sweep_dir(sweep_dir), weight_sets=sets, rule=qr,
                                 include_saturated=include_saturated)
    for line in result.lines:
        click.echo(line)
    click.echo(f"report: {result.path}")
