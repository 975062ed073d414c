"""What a result must carry to be compared later: the machine, the software, the commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psutil

from harness import __version__

REPO = Path(__file__).resolve().parents[2]


def commit() -> str:
    """The checkout's commit, with '+dirty' when the working tree differs; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str | int | float | None]:
    """The machine a run or sweep ran on, for its record (harness.analysis.sweep_folder.Machine reads it)."""
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def stamp() -> dict[str, object]:
    """Where a run or sweep comes from: the version, the commit, the machine and when it started. A plain dict:
    a run adds its own facts to it (the wire capture's note) before it goes into config.yaml."""
    return {"manobench": __version__, "commit": commit(), "machine": machine(),
            "started": datetime.now(UTC).isoformat(timespec="seconds")}
