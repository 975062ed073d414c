"""Click parameter types for numbers typed on the command line: ASCII digits only.

click.INT and click.FLOAT call int() and float(), which accept any Unicode digit: `--requests ١٠` (Arabic-Indic)
or `--users ４` (full-width) would run as 10 and 4, a value the user cannot read on the screen running as
another. These types take what harness.plan.bounds.NUMBER reads (an ASCII decimal number) and nothing else,
and say which option was wrong in click's one line (exit code 2 through harness.cli.entry.run_cli).
"""

from __future__ import annotations

import re

import click

from harness.plan.bounds import NUMBER

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


class AsciiInt(click.ParamType):
    """A whole number in ASCII digits, optionally at least `min`."""

    name = "integer"

    def __init__(self, min: int | None = None) -> None:  # `min`: click.IntRange calls it so
        self.min = min

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            number = int(value)
        else:
            self.fail(f"{value!r} is not a whole number in ASCII digits 0-9", param, ctx)
        if self.min is not None and number < self.min:
            self.fail(f"{number} is smaller than the minimum {self.min}", param, ctx)
        return number


class AsciiFloat(click.ParamType):
    """A finite decimal number in ASCII digits (no `inf`, `nan`, `1_0`)."""

    name = "number"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            return float(value)
        self.fail(f"{value!r} is not a number in ASCII digits 0-9", param, ctx)


ASCII_INT = AsciiInt()
ASCII_FLOAT = AsciiFloat()
