"""What a sweep folder holds, as the analysis reads it: sweep.yaml (the spec, its points and ids, the machine
and commit of every session), trials.csv (the index of finished trials) and trials/<id>/ (one run folder
each). `harness sweep` (harness.experiment.sweep) writes it; fit, optimise and report only read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError


def read_record(out: Path) -> dict[str, Any]:
    """sweep.yaml of the sweep folder `out`, or a one-line UserError when `out` is none."""
    path = Path(out) / "sweep.yaml"
    if not path.exists():
        raise UserError(f"{out} is not a sweep folder (no sweep.yaml): run `harness sweep SPEC --out {out}` first")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
