"""The harness's own state root: the one place on this machine where manobench keeps what outlives a run and
is not a result (the machine-wide sweep admission board, the monolith reference cache, the data directories
of the brokers and databases it starts), so clean-up can be confined to it.

Why a directory of our own and not /tmp: anything in /tmp can be planted or replaced by any local user or
by the system under test running as another user, and a path read from a process's environment can name any
directory at all. The root is made 0700 and owned by the user running the harness; `state_root()` refuses
one that is not (one line, exit 2), so nobody else can plant a file the harness will trust or delete.

`MANOBENCH_STATE` moves it (tests give every session its own); default `$XDG_STATE_HOME/manobench`, else
`~/.local/state/manobench`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path

from harness.errors import UserError

STATE_ENV = "MANOBENCH_STATE"


def state_root() -> Path:
    """The state root, made 0700 if missing; refused unless it is a directory we own that nobody else can write."""
    configured = os.environ.get(STATE_ENV)
    if configured:
        root = Path(configured)
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        root = Path(base) / "manobench"
    root = root.absolute()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _owned_dir(root)


def state_dir(*parts: str) -> Path:
    """A sub-directory of the state root (each level 0700 and ours), made if missing."""
    path = state_root()
    for part in parts:
        if not part or part in (".", "..") or "/" in part:
            raise ValueError(f"state_dir: {part!r} is not one folder name")
        path = path / part
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        _owned_dir(path)
    return path


def _owned_dir(path: Path) -> Path:
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise UserError(f"state: {path} is not a directory (set {STATE_ENV} to one of your own)")
    if info.st_uid != os.geteuid():
        raise UserError(f"state: {path} is owned by uid {info.st_uid}, not by us ({os.geteuid()}): refusing it")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours: close it rather than trust a group- or world-writable root
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file in the same folder, fsynced, renamed over it.
    A reader never sees a half-written file, even when the writer is killed mid-write."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: object, indent: int | None = 1) -> None:
    write_atomic(path, json.dumps(data, indent=indent, allow_nan=True))

