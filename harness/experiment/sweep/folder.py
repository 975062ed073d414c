"""A sweep's folder: DIR/sweep.yaml (the spec, its points, every session's machine and commit) and DIR/trials.csv
(a row per finished trial, flushed before the trial counts as finished), which is what lets a stopped sweep resume:
rerunning the same command skips the finished trials, and a folder that holds another sweep is refused."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import yaml

from harness.errors import UserError
from harness.experiment import provenance
from harness.experiment.sweep.spec import AUTO, LOADS, RUN_KEYS, Plan, parse_jobs, run_defaults

if TYPE_CHECKING:
    from harness.analysis.sweep_folder import Session, SweepRecord  # sweep.yaml's shape (the analysis reads it)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of trials.csv, every cell as written; a torn last line (a sweep killed while appending) is not
    a row."""
    from harness.analysis import tables  # pandas: not imported by the trial processes, which need none of it

    frame = tables.read_csv(path, text=True)
    if "trial" not in frame:
        return []
    return frame[frame["trial"] != ""].to_dict("records")  # type: ignore[return-value]


class TrialsCsv:
    """DIR/trials.csv: appended a row at a time, each flushed to disk before the trial counts as finished."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        from harness.analysis import tables

        self.path, self.columns = path, columns
        if path.exists():
            if list(tables.read_csv(path, text=True).columns) != columns:
                raise UserError(f"{path} has other columns than this sweep writes: it belongs to another sweep "
                                "(use another --out)")
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):  # torn last line: cut it off
                path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
        else:
            path.write_text(",".join(columns) + "\n", encoding="utf-8")

    def append(self, row: Mapping[str, object]) -> None:
        from harness.analysis import tables

        line = tables.csv_line({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()},
                               self.columns)
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _comparable(spec: Mapping[str, object]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in RUN_KEYS}, sort_keys=True, default=str)


def recorded_load(out: Path) -> str | None:
    """The load generator a sweep folder was started with (None: no folder, or it does not say)."""
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        load = (yaml.safe_load((out / "sweep.yaml").read_text(encoding="utf-8")) or {}).get("load")
        return load if load in LOADS else None
    return None


def prepare(out: Path, plan_: Plan, spec_file: str | None, load: str, jobs: int | str = 1) -> SweepRecord:
    """Create or reopen DIR; refuse a folder that holds a different sweep. Returns sweep.yaml's record."""
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "sweep.yaml"
    session = cast("Session", {**provenance.stamp(), "load": load, "jobs": jobs, "repeat": plan_.repeat,
                               "argv": sys.argv[1:]})
    record: SweepRecord
    if record_path.exists():
        try:
            record = yaml.safe_load(record_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            record = {}
        if _comparable(record.get("spec", {})) != _comparable(plan_.spec):
            raise UserError(f"{out} holds another sweep (its spec differs from this one): use another --out, or the "
                            "spec it was started with")
        if record.get("load", load) != load:
            raise UserError(f"{out} was started with --load {record.get('load')}: resume it with the same --load")
        record["repeat"] = max(plan_.repeat, int(record.get("repeat", 1)))
        record.setdefault("sessions", []).append(session)
    else:
        record = cast("SweepRecord", {"spec_file": spec_file, "spec": plan_.spec, "load": load, "repeat": plan_.repeat,
                                      "swept": plan_.swept, **provenance.stamp(), "sessions": [session]})
    record["points"] = [{"id": p.id, "overrides": p.overrides} for p in plan_.points]
    if plan_.exploration:
        record["exploration"] = plan_.exploration
    tmp = record_path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    tmp.replace(record_path)
    return record


# --- the sweep ------------------------------------------------------------------------------------------------




def resolve_run(spec: dict[str, object], out: Path, load: str | None, jobs: int | str | None
                ) -> tuple[str, int | str]:
    """The load generator and the concurrency of this session: the command line's, else the spec's, else (the
    load) the folder's it resumes, else the fast path: builtin, auto."""
    if load is not None and load not in LOADS:
        raise UserError(f"--load: expected one of {', '.join(LOADS)} (got {load!r})")
    if jobs is not None:
        jobs = parse_jobs(jobs, "--jobs")
    spec_load, spec_jobs = run_defaults(spec)
    return (load or spec_load or recorded_load(out) or "builtin",
            jobs if jobs is not None else spec_jobs if spec_jobs is not None else AUTO)

