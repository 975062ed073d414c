"""A run's output folder: one experiment, one folder, never two runs in one.

A run appends its history as it goes (so a run killed half-way leaves a valid prefix); run twice into the
same folder, the second history was appended to the first and the verdict counted both ("completed 8" of
"requests 4"). So `--out` must name a new or empty folder, or is refused in one line before anything starts;
`--force` replaces it whole, and only when it is a run folder the harness wrote (it deletes nothing else).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.errors import UserError

# files whose presence makes a folder a run's (the record files, the seal, the derived tables)
RUN_FILES = ("config.yaml", "events.jsonl", "manifest.json", "summary.csv", "deployment.json", "counters.json")


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "events.jsonl").is_file()


def check_out(path: Path, force: bool = False) -> None:
    """Before anything starts: `path` may be new or an empty folder; with `force`, an existing run folder is
    removed whole. Anything else is a one-line UserError."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise UserError(f"--out: {path} exists and is not a folder")
    if not any(path.iterdir()):
        return
    if not force:
        raise UserError(f"--out: {path} is not empty: give a new folder, or --force to replace the run in it")
    if not is_run_folder(path):
        raise UserError(f"--out: {path} is not a run folder (no config.yaml and events.jsonl): "
                        "--force replaces only a run folder; refusing to delete it")
    shutil.rmtree(path)


def new_folder(base: Path) -> Path:
    """A folder made here and now for one run: `base`, else `base-2`, `base-3`, ... (each made atomically, so two
    runs started in the same second, whose default names are equal, never share one)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"--out: {base} and 999 numbered folders beside it exist: give --out")


def claim(path: Path) -> bool:
    """Make the run's folder; refused when it holds another run's files (a sweep's trial folder holds its
    trial.json before the trial runs into it). True when this call made it, so a run that fails to start may
    remove it again and leave no partial folder; a folder someone else made is never removed."""
    made = not path.exists()
    if not made:
        if not path.is_dir():
            raise UserError(f"--out: {path} exists and is not a folder")
        clash = sorted(name for name in RUN_FILES if (path / name).exists())
        if clash:
            raise UserError(f"--out: {path} already holds a run ({', '.join(clash)}): give a new folder, "
                            "or --force to replace it")
    path.mkdir(parents=True, exist_ok=True)
    return made
