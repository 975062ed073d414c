"""`harness ...` in the test's own process, as a CompletedProcess: fast enough for a table of bad inputs, and an
exception that escapes the CLI becomes a traceback in stderr (which every user-error test refuses)."""

from __future__ import annotations

import subprocess
import traceback

from harness.cli import commands as cli


def run_main(argv: list[str], capsys) -> subprocess.CompletedProcess[str]:
    capsys.readouterr()
    code, trace = 0, ""
    try:
        cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception:
        code, trace = 1, traceback.format_exc()
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err + trace)
