"""`harness swarm ...`: the swarm runtime's preflight (docs/swarm.md)."""

from __future__ import annotations

import asyncio

import click

from harness.cli.params import ASCII_FLOAT
from harness.errors import UserError


@click.group("swarm")
def swarm_group() -> None:
    """Docker Swarm: the swarm runtime (--runtime swarm; docs/swarm.md)."""


@swarm_group.command("check")
@click.option("--timeout", type=ASCII_FLOAT, default=30.0, show_default=True, help="Seconds to wait for every agent.")
def swarm_check_cmd(timeout: float) -> None:
    """List nodes, labels, the image on every node and each node's clock offset; one line and exit 2 for what is
    missing. Only nodes labelled $MANOBENCH_SWARM_LABEL (key=value) when it is set."""
    from harness.experiment.testbed import new_run_id
    from harness.runtime.swarm_check import check

    report, problems = asyncio.run(check(new_run_id(), timeout))
    click.echo(f"image: {report.get('image')}")
    for node in report["nodes"]:
        labels = ",".join(f"{k}={v}" for k, v in node["labels"].items()) or "-"
        clock = node.get("clock")
        offset = (f"offset {clock['offset'] * 1e3:+.3f} ms +- {clock['uncertainty'] * 1e3:.3f} ms" if clock
                  else "offset ?")
        click.echo(f"node {node['hostname']} ({node['role']}, {node['addr']}, labels {labels}): "
                   f"image {node.get('image', '?')}, agent {node.get('agent', '?')}, {offset}")
    click.echo(f"checked in {report['took_s']:.2f} s")
    if problems:
        raise UserError("swarm check: " + "; ".join(problems))
    click.echo("swarm check: ready")


@swarm_group.command("images")
@click.option("--engine", "engines", multiple=True, required=True, metavar="URL",
              help="A node's Engine (ssh://host, tcp://host:2376, unix:///path). Repeatable.")
def swarm_images_cmd(engines: tuple[str, ...]) -> None:
    """Copy the services' image to each node's Engine (docker save here, load there; skipped where present)."""
    from harness.runtime import image
    from harness.runtime.swarm_images import distribute

    tag = image.build(say=click.echo).tag
    for copied in distribute(tag, list(engines)):
        click.echo(f"{copied.engine}: {'already there' if copied.skipped else 'loaded'} {tag} "
                   f"({copied.seconds:.1f} s)")
