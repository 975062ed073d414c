"""The one guarded way to read a record file of a run or sweep folder.

A folder is evidence that may have been cut short (a run killed half-way, a full disk), copied badly or
doctored. Whatever is wrong with a file, the reader says so in one line naming the file (`UserError`: exit 2,
no traceback), so a corrupt folder is never mistaken for a bug of the harness nor for a finding about the
system under test. Parsing that goes beyond the syntax (a key missing, a value of the wrong type) runs inside
`guard(path)`, which turns the usual exceptions into the same one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import UserError

MAX_BYTES = 1 << 30  # a record file larger than this is not one a run of this harness wrote


class RecordFileError(UserError):
    """A record file that is missing, unreadable or does not hold what it must."""


def _reason(err: BaseException) -> str:
    if isinstance(err, ValidationError):
        if not err.errors():
            return "invalid"
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    if isinstance(err, KeyError):
        return f"missing key {err.args[0]!r}" if err.args else "missing key"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.start})"
    if isinstance(err, OSError):
        return err.strerror or type(err).__name__
    if isinstance(err, yaml.YAMLError):
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "does not parse"
        return f"not YAML: {problem}" + (f" (line {mark.line + 1})" if mark is not None else "")
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg} (line {err.lineno})"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


@contextmanager
def guard(path: Path | str, what: str = "") -> Iterator[None]:
    """An error reading or interpreting `path` becomes one line: `<path>: <what>: <reason>`."""
    try:
        yield
    except RecordFileError:
        raise
    except UserError as err:  # a config rule broken inside a recorded z: still this file's fault
        raise RecordFileError(f"{path}: {err}") from None
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, yaml.YAMLError,
            ValidationError, OverflowError, RecursionError) as err:
        raise RecordFileError(f"{path}: {what + ': ' if what else ''}{_reason(err)}") from None


def read_bytes(path: Path | str) -> bytes:
    """A record file's bytes: one line if it is missing, not a file, or larger than any run of ours writes."""
    path = Path(path)
    with guard(path):
        if not path.is_file():
            raise RecordFileError(f"{path}: missing")
        if path.stat().st_size > MAX_BYTES:
            raise RecordFileError(f"{path}: larger than {MAX_BYTES >> 20} MiB: not a record file")
        return path.read_bytes()


def read_text(path: Path | str) -> str:
    data = read_bytes(path)
    with guard(path):
        return data.decode("utf-8")


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def _finite(value: float) -> float:
    if math.isinf(value):
        raise ValueError("an infinite number")
    return value


def read_json(path: Path | str, kind: type = dict) -> Any:
    """A JSON document whose top level is `kind` (an object unless told otherwise)."""
    text = read_text(path)
    with guard(path):
        data = json.loads(text, parse_float=lambda s: _finite(float(s)))
    if not isinstance(data, kind):
        raise RecordFileError(f"{path}: expected a JSON {_JSON_NAMES.get(kind, kind.__name__)}, found "
                              f"{_JSON_NAMES.get(type(data), type(data).__name__)}")
    return data


def read_yaml(path: Path | str, kind: type = dict) -> Any:
    """A YAML document (safe loader) whose top level is `kind` (a mapping unless told otherwise)."""
    text = read_text(path)
    with guard(path):
        data = yaml.safe_load(text)
    if not isinstance(data, kind):
        raise RecordFileError(f"{path}: expected a YAML {'mapping' if kind is dict else kind.__name__}, "
                              f"found {type(data).__name__ if data is not None else 'nothing'}")
    return data
