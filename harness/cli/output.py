"""Rows of figures to the terminal (rich table), CSV or JSON: one place so every command formats alike."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render(rows: Sequence[dict[str, Any]], fmt: str, title: str | None = None) -> str:
    """All rows (same keys, in order) as one string in the chosen format; CSV keeps full precision."""
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps([{k: _json_safe(v) for k, v in row.items()} for row in rows], indent=2) + "\n"
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if rows and isinstance(rows[0][column], float) else "left")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def write_rows(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Every row as CSV at `path` (`--out`), or a UserError saying why it cannot be written."""
    from pathlib import Path

    from harness.errors import UserError

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(render(rows, "csv"), encoding="utf-8")
    except OSError as err:
        raise UserError(f"--out: cannot write {path}: {err.strerror}") from None
