"""The `harness` command line. Every user mistake ends as one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path

import click

from harness import model
from harness.analysis.qr import QR_RULES
from harness.cli.entry import run_cli
from harness.cli.output import FORMATS, render, write_rows
from harness.cli.params import ASCII_FLOAT, ASCII_INT, AsciiInt
from harness.errors import UserError
from harness.load import LOADS
from harness.plan import config


def config_options(func):
    """--config FILE and --set key=value, shared by every command that builds an experiment."""
    func = click.option(
        "--set", "sets", multiple=True, metavar="KEY=VALUE",
        help="Override one config key (paper symbols: n, t_i, h_r, t_h, s_p, s_o, ...). Repeatable.",
    )(func)
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None,
        help="Experiment file (.yaml, .yml or .toml) of key: value pairs.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="manobench")
def cli() -> None:
    """manobench: fault injection and benchmarks for reliable microservice-based NFV MANO.

    Symbols, units and equations follow Soenen et al., "Optimising Microservice-based Reliable NFV MANO
    Architectures": seconds, kB and kB/s.

    Environment: every MANOBENCH_* variable, its default and what reads it: docs/environment.md.
    """


@cli.command("model")
@click.option("--design", type=click.Choice(config.DESIGNS), default=None, help="Default: centralised.")
@click.option("--mechanism", type=click.Choice(config.MECHANISMS), default=None, help="Default: state-sharing.")
@click.option("--transport", type=click.Choice(config.TRANSPORTS), default=None,
              help="amqp: print the bus-aware model beside the paper's.")
@config_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def model_cmd(design: str | None, mechanism: str | None, transport: str | None, config_file: str | None,
              sets: tuple[str, ...], fmt: str) -> None:
    """Print the modelled t_m, t_c, t_l, t_r, R_a, R_r, B_op, B_rel, B_tot, Q_r (and C) of one configuration."""
    z = config.load(config_file, sets, design=design, mechanism=mechanism, transport=transport)
    rows = [model.evaluate(z).as_row()]
    if z.transport == "amqp":  # the paper's model beside this project's bus-aware one (harness.model.bus)
        from harness.model import bus

        rows = [{"model": "paper", **rows[0]}, {"model": "bus", **bus.evaluate(z).as_row()}]
    for row in rows:
        if row["C"] is None:
            row.pop("C")
    click.echo(render(rows, fmt, title=f"model: {z.design}, {z.mechanism}"
                      + (", amqp" if z.transport == "amqp" else "")), nl=False)


@cli.command("optimise")
@click.argument("sweep_dir", required=False, type=click.Path(file_okay=False))
@click.option("--design", "designs", type=click.Choice(config.DESIGNS), multiple=True,
              help="Design(s) to compare. Default: centralised and distributed.")
@click.option("--mechanism", "mechanisms", type=click.Choice(config.MECHANISMS), multiple=True,
              help="Mechanism(s) of the centralised design. Default: state-sharing.")
@click.option("--weights", required=True, metavar="A,B,G,D",
              help="alpha,beta,gamma,delta of Eq 10 (gamma is per kB/s of B_tot).")
@click.option("--grid", "grids", multiple=True, metavar="KEY=V1,V2,...",
              help="Values to try for one config key. Repeatable; the grid is their product.")
@config_options
@click.option("--top", type=AsciiInt(min=1), default=10, show_default=True, help="Rows to print.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write every ranked row as CSV.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--qr", type=click.Choice(QR_RULES), default="cpu", show_default=True,
              help="With SWEEP_DIR: the one Q_r rule of both costs, measured and modelled (docs/analysis.md).")
@click.option("--include-saturated", is_flag=True,
              help="Keep trials whose host saturated in the optimum (they rank after the others by default).")
def optimise_cmd(sweep_dir: str | None, designs: tuple[str, ...], mechanisms: tuple[str, ...], weights: str,
                 grids: tuple[str, ...], config_file: str | None, sets: tuple[str, ...], top: int, out: str | None,
                 fmt: str, qr: str, include_saturated: bool) -> None:
    """Rank configurations z by the cost C(z) of Eq 10, the optimum first.

    With SWEEP_DIR (a `harness sweep` folder): C(z) on the measured points beside the fitted model. Without:
    the model alone over --grid."""
    if sweep_dir:
        if grids or designs or mechanisms or config_file or sets:
            raise UserError("optimise: with a sweep folder, the points are the sweep's (no --grid, --design, "
                            "--mechanism, --config or --set)")
        from harness.cli.analysis import show_measured_optimum

        show_measured_optimum(sweep_dir, weights, top=top, out=out, fmt=fmt, qr=qr, include_saturated=include_saturated)
        return
    from harness.analysis import optimise  # pandas: imported by the commands that need it, not by every CLI call

    w = optimise.parse_weights(weights)
    grid = optimise.parse_grid(grids)
    base = config.apply_overrides(
        config.read_file(config_file) if config_file else {}, [config.parse_assignment(s) for s in sets]
    )
    pairs = optimise.candidates(designs or ("centralised", "distributed"), mechanisms or ("state-sharing",))
    rows = optimise.evaluate_grid(base, pairs, grid, w)
    if out:
        write_rows(out, rows)
    click.echo(render(rows[:top], fmt, title=f"C(z) with alpha,beta,gamma,delta = {weights}"), nl=False)
    if fmt == "table":
        for (design, mechanism), row in optimise.optimum_per_candidate(rows).items():
            point = ", ".join(f"{k}={row[k]}" for k in grid) or "the base configuration"
            click.echo(f"optimum {design} ({mechanism}): {point}, C = {row['C']:.6g}")


@cli.command("run")
@click.option("--design", type=click.Choice(config.DESIGNS), default=None, help="Default: centralised.")
@click.option("--mechanism", type=click.Choice(config.MECHANISMS), default=None, help="Default: state-sharing.")
@click.option("--target", "target", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Deploy the orchestrator a target file describes instead of a design (docs/targets.md).")
@click.option("--fault", type=click.Choice(config.FAULTS), default=None, help="Default: none.")
@click.option("--fault-target", "fault_target", multiple=True, metavar="ID|role:NAME",
              help="crash, pause, partition, link-delay: the instances struck (repeat for several).")
@click.option("--fault-at", "fault_at", default=None, metavar="worst|task:K|time:T|request:K+D",
              help="When the fault strikes (default worst: where the model says the lost time is largest).")
@click.option("--runtime", type=click.Choice(config.RUNTIMES), default=None,
              help="Default: local. docker: per-container limits from the config (container_cpus, "
                   "container_memory), else $MANOBENCH_DOCKER_CPUS / $MANOBENCH_DOCKER_MEMORY; swarm: "
                   "$MANOBENCH_SWARM_LABEL=key=value picks the nodes, $MANOBENCH_ORPHAN_GRACE (default 10 s) is "
                   "how long services outlive a dead harness, $MANOBENCH_OVERLAY_ENCRYPTED=0|1 overrides the "
                   "IPsec probe (docs/environment.md).")
@click.option("--transport", type=click.Choice(config.TRANSPORTS), default=None,
              help="Default: http; amqp puts the services on a RabbitMQ bus (docs/transport.md).")
@config_options
@click.option("--requests", type=ASCII_INT, default=None, help="Workflows to submit (default 20).")
@click.option("--users", type=ASCII_INT, default=None, help="Closed loop: concurrent BSS users (default 4).")
@click.option("--rate", type=ASCII_FLOAT, default=None, help="Open loop: requests per second instead of users.")
@click.option("--seed", type=ASCII_INT, default=None)
@click.option("--load", type=click.Choice(LOADS), default="locust", show_default=True,
              help="Load generator: Locust in its own process, or the harness's own asyncio BSS.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="A new (or empty) folder. Default: results/<time>-<design>-<fault>.")
@click.option("--force", is_flag=True, help="Replace the run folder --out names (only a run folder) whole.")
def run_cmd(design, mechanism, target, fault, fault_target, fault_at, runtime, transport, config_file, sets, requests,
            users, rate, seed, load, out, force) -> None:
    """Run one experiment: bring a design up, load it, inject the fault, measure, check, report.

    MANOBENCH_STATE moves the harness's state root (broker data, caches); MANOBENCH_FORKSERVER=0 starts every
    service as its own interpreter."""
    from harness.cli.progress import report_run
    from harness.experiment import outdir
    from harness.plan import capacity
    from harness.plan.target import experiment_for

    z = config.load(config_file, sets, design=design, mechanism=mechanism, fault=fault, fault_at=fault_at,
                    runtime=runtime, transport=transport, requests=requests, users=users, rate=rate, seed=seed,
                    target=target, fault_target=list(fault_target) or None)
    z, _ = experiment_for(z)  # a target file: read and checked with the run's rules, before anything starts
    capacity.check_run(z)  # before --force may remove anything: a refused run deletes nothing
    if z.rate is not None and load == "builtin":
        raise UserError("rate: an open loop (--rate) needs the Locust load (--load locust)")
    if out:
        outdir.check_out(Path(out), force=force)
    elif force:
        raise UserError("--force replaces the folder --out names: give --out too")
    report_run(z, out, load)


@cli.command("analyse")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write summary.csv, links.csv, affected.csv and cpu.csv here. Default: print the table.")
def analyse_cmd(run_dir: str, out: str | None) -> None:
    """Recompute a run's figures from its folder alone (no service runs): after a fix to a metric, with a new
    model reading, or on another machine."""
    from harness.cli.progress import summary_table, verdict_line
    from harness.history import record
    from harness.measure import summary

    tables = summary.derive(record.load(run_dir))
    if out:
        summary.write(tables, Path(out))
        click.echo(f"analyse: wrote summary.csv, links.csv, affected.csv, cpu.csv to {out}")
        return
    click.echo(summary_table(tables.summary))
    click.echo(verdict_line(tables.verdict, tables.summary))


@cli.command("clean")
@click.option("--all", "everything", is_flag=True, help="Also end processes of runs that are still going.")
@click.option("--run", "run_id", default=None, metavar="RUN", help="Only what this run (its id) started.")
def clean_cmd(everything: bool, run_id: str | None) -> None:
    """End processes and proxies that crashed runs left behind (found by their MANOBENCH_RUN label), and
    remove their containers and networks (found by their manobench.run label) and the data directories of
    their brokers recorded under the state root ($MANOBENCH_STATE)."""
    from harness.runtime import leftovers

    found = leftovers.processes(run_id, orphans=not everything)
    for proc in found:
        try:
            click.echo(f"ending {proc.pid}: {' '.join(proc.cmdline())[:100]}")
        except Exception:
            click.echo(f"ending {proc.pid}")
    leftovers.end(found)
    data = leftovers.remove_stale_data(run_id)  # recorded data dirs under the state root whose run is gone
    stale = leftovers.docker_objects(run_id, orphans=not everything)
    for obj in stale:
        click.echo(f"removing {obj['kind']} {obj['name']} (run {obj['run']})")
    leftovers.remove_docker(stale)
    for run in data:
        click.echo(f"removing the broker data of run {run} (under the state root)")
    if found or stale or data:
        click.echo(f"clean: {len(found)} leftover process(es) ended, {len(stale)} container(s)/network(s) removed,"
                   f" {len(data)} run(s)' broker data removed")
    else:
        click.echo("clean: nothing left behind")


@cli.group("image")
def image_group() -> None:
    """The container image every service runs in (the docker runtime; docs/docker.md)."""


@image_group.command("build")
@click.option("--base", default=None, metavar="IMAGE|debootstrap|auto",
              help="Base image (default $BASE_IMAGE, else auto: a slim Python image if one can be had, else a "
                   "minimal Debian made here with debootstrap).")
@click.option("--force", is_flag=True, help="Build even if an image of the same content exists.")
def image_build_cmd(base: str | None, force: bool) -> None:
    """Build manobench-target (cached by content: seconds when nothing changed)."""
    from harness.runtime import image

    info = image.build(base, force=force, say=click.echo)
    click.echo(f"image: {info.describe()}")


@cli.group("compose")
def compose_group() -> None:
    """Compose files for the designs (the docker runtime; docs/docker.md)."""


@compose_group.command("render")
@click.option("--design", "designs", type=click.Choice(config.DESIGNS), multiple=True,
              help="Design(s) to render (default: all three).")
@config_options
@click.option("--out", type=click.Path(file_okay=False), default="compose", show_default=True,
              help="Folder for <design>.yml.")
def compose_render_cmd(designs: tuple[str, ...], config_file: str | None, sets: tuple[str, ...], out: str) -> None:
    """Write a compose file per design that `docker-compose -f OUT/<design>.yml up` starts by hand."""
    from harness.runtime import compose

    Path(out).mkdir(parents=True, exist_ok=True)
    for design in designs or config.DESIGNS:
        z = config.load(config_file, sets, design=design)
        path = Path(out) / f"{compose.standalone_name(z)}.yml"
        path.write_text(compose.render_standalone(z), encoding="utf-8")
        click.echo(f"compose: wrote {path}")


def _register_analysis() -> None:
    from harness.cli.analysis import fit_cmd, report_cmd, sweep_cmd
    from harness.cli.swarm import swarm_group

    for command in (sweep_cmd, fit_cmd, report_cmd, swarm_group):
        cli.add_command(command)


_register_analysis()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn user errors into one line and exit code 2."""
    run_cli(cli, argv)


if __name__ == "__main__":
    main()
