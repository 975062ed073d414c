"""Running a click group the way every manobench command line does: a user error is one line on stderr and
exit code 2, never a traceback; Ctrl-C (SIGINT, even one a background job's shell ignored) is exit code 130."""

from __future__ import annotations

import sys

import click

from harness.errors import TestbedError, UserError
from harness.signals import take_sigint


def run_cli(group: click.Group, argv: list[str] | None = None) -> None:
    take_sigint()
    try:
        group.main(args=argv, prog_name="harness", standalone_mode=False)
    except UserError as err:
        click.echo(f"harness: {err}", err=True)
        sys.exit(2)
    except TestbedError as err:  # the testbed failed, not the user: what failed and its log, no traceback
        click.echo(f"harness: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("harness: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError:
        click.echo("harness: no command given (Usage: harness [OPTIONS] COMMAND ...; see harness --help)", err=True)
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"harness: error: {err.format_message()}", err=True)
        sys.exit(2)
