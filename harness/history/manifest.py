"""manifest.json: a run folder's seal, written once as the run closes.

It records what the run itself expected and saw (the requests it was configured to submit, the lines of its
history) and a SHA-256 digest of every record file any figure is derived from. Reading a folder back,
`check` compares the two: a folder whose seal is missing (a run killed before it closed, or a folder written
by hand), whose files differ from their digests (doctored, truncated or appended to after the run) or whose
counts do not match is recognised as such, and its verdict is `unknown` with the reason named
(harness.checker.Evidence), never `pass`.

A digest guards against accidents and honest edits, not against someone who rewrites the seal too: a folder
is evidence only as far as its custody is trusted (docs/security.md).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TypedDict

from harness.history.guarded import RecordFileError, read_json
from harness.state import write_json_atomic

MANIFEST = "manifest.json"
SEALED = ("config.yaml", "events.jsonl", "deployment.json", "counters.json", "reference.json", "wire.csv")
VERSION = 1


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FileDigest(TypedDict):
    sha256: str
    bytes: int


class Manifest(TypedDict):
    """manifest.json as `seal` writes it."""

    version: int
    sealed_at: float  # wall seconds
    expected: dict[str, int]  # what the run expected: requests, history_lines
    files: dict[str, FileDigest]  # each record file (SEALED) present when the run closed


def seal(folder: Path, expected: dict[str, int]) -> Manifest:
    """Write manifest.json: `expected` (e.g. requests, history lines) and the digest of each record file."""
    files: dict[str, FileDigest] = {name: {"sha256": digest(folder / name), "bytes": (folder / name).stat().st_size}
                                    for name in SEALED if (folder / name).is_file()}
    manifest: Manifest = {"version": VERSION, "sealed_at": time.time(), "expected": expected, "files": files}
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def check(folder: Path) -> tuple[dict[str, object] | None, list[str]]:
    """(what the seal says the run expected, or None where there is no seal; the files that differ from it):
    ({...}, []) for an intact sealed folder. What it expected is read back unchecked: its reader checks it."""
    path = folder / MANIFEST
    if not path.exists():
        return None, []
    try:
        manifest = read_json(path)
        files = manifest["files"]
        expected = manifest.get("expected") or {}
        if not isinstance(files, dict) or not isinstance(expected, dict):
            raise TypeError
    except (RecordFileError, KeyError, TypeError):
        return {}, ["manifest.json is unreadable: the folder's seal is broken"]
    problems = []
    for name in SEALED:
        sealed, present = files.get(name), (folder / name).is_file()
        if sealed is None:
            if present:
                problems.append(f"{name} was added after the run closed")
            continue
        if not present:
            problems.append(f"{name} is missing since the run closed")
        elif not isinstance(sealed, dict) or digest(folder / name) != sealed.get("sha256"):
            problems.append(f"{name} differs from its digest: changed since the run closed")
    return expected, problems
