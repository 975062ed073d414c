"""Rows of figures to the terminal (rich table), CSV or JSON: one place so every command formats alike."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def _json_safe(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render(rows: Sequence[Mapping[str, object]], fmt: str, title: str | None = None, *,
           csv_path: str | Path | None = None, width: int | None = None) -> str:
    """All rows (same keys, in order) as one string in the chosen format; CSV keeps full precision.

    A table never cuts a column name or a cell: it shows the columns that fit `width` (default: the
    terminal's, `COLUMNS`, else 100 when not on a terminal), in their order, and names the ones left out with
    where every column is: `csv_path` (a CSV the command wrote) or `--format csv`."""
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps([{k: _json_safe(v) for k, v in row.items()} for row in rows], indent=2) + "\n"
    width = width or shutil.get_terminal_size((100, 24)).columns
    cells = {c: [_cell(row[c]) for row in rows] for c in columns}
    shown: list[str] = []
    left_out: list[str] = []
    used = 1  # the table's left border
    for column in columns:
        need = _min_width(column, cells[column]) + 3  # padding either side, and the border
        if not shown or used + need <= width:
            shown.append(column)
            used += need
        else:
            left_out.append(column)
    widths = {c: max(len(c), *(len(v) for v in cells[c])) for c in shown}  # natural: nothing wrapped
    excess = 1 + sum(w + 3 for w in widths.values()) - width
    for column in sorted(shown, key=lambda c: widths[c] - _min_width(c, cells[c]), reverse=True):
        if excess <= 0:
            break
        give = min(excess, widths[column] - _min_width(column, cells[column]))  # text wraps at spaces
        widths[column] -= give
        excess -= give
    table = Table(title=title)
    for column in shown:
        table.add_column(column, justify="right" if rows and isinstance(rows[0][column], float) else "left",
                         width=widths[column], overflow="fold")
    for i in range(len(rows)):
        table.add_row(*(cells[c][i] for c in shown))
    console = Console(file=io.StringIO(), width=max(width, used), force_terminal=False)
    console.print(table)
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    if left_out:
        where = f"every column: {csv_path}" if csv_path else "every column: --format csv"
        text += f"({len(left_out)} more column(s) not shown at {width} characters: {', '.join(left_out)}; {where})\n"
    return text


def _min_width(column: str, cells: list[str]) -> int:
    """The narrowest a column may be without cutting anything: its name, and its longest word (text wraps at
    spaces, a number or an identifier does not)."""
    longest_word = max((len(word) for cell in cells for word in cell.split()), default=0)
    return max(len(column), min(longest_word, 40))


def write_rows(path: str, rows: Sequence[Mapping[str, object]]) -> None:
    """Every row as CSV at `path` (`--out`), or a UserError saying why it cannot be written."""
    from harness.errors import UserError

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(render(rows, "csv"), encoding="utf-8")
    except OSError as err:
        raise UserError(f"--out: cannot write {path}: {err.strerror}") from None
