"""What a sweep folder holds, as the analysis reads it: sweep.yaml (the spec, its points and ids, the machine
and commit of every session), trials.csv (the index of finished trials) and trials/<id>/ (one run folder
each). `harness sweep` (harness.experiment.sweep) writes it; fit, optimise and report only read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.history.guarded import guard, read_yaml


def read_record(out: Path) -> dict[str, Any]:
    """sweep.yaml of the sweep folder `out`, or a one-line UserError when `out` is none."""
    path = Path(out) / "sweep.yaml"
    if not path.exists():
        raise UserError(f"{out} is not a sweep folder (no sweep.yaml): run `harness sweep SPEC --out {out}` first")
    record = read_yaml(path)
    with guard(path):  # the parts every reader walks: a list of points, each a mapping with an id
        points = record.get("points") or []
        if not isinstance(points, list) or not all(isinstance(p, dict) and "id" in p for p in points):
            raise TypeError("points is not a list of points with ids")
        if not isinstance(record.get("spec") or {}, dict):
            raise TypeError("spec is not a mapping")
    return record
