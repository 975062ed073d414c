"""The README's bus, swarm and sweep commands, run as written (tests/readme_runner.py has the rules).

A file of its own so the suite's two pytest-xdist workers (`--dist loadfile`) share the README: this one takes
the sections named in SECTIONS, tests/test_readme.py every other section (so a new section runs there without
being listed anywhere) and the checks of the README's rules and of docs/environment.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import readme_runner as rr

from harness.runtime.local import SESSION_ENV

SECTIONS = {"On a message bus", "On a Docker Swarm", "From many runs to the operator's answer"}
# regex on a command -> reason: a README command known to be broken, as xfail(strict=True), so that it fails the
# suite again once it works. None now: the two bus commands pass since the broker got absolute paths (4009e8b)
XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module")
def session() -> Iterator[rr.ReadmeSession]:
    s = rr.ReadmeSession(os.environ.get(SESSION_ENV))
    yield s
    problems = s.close()
    assert not problems, problems


@pytest.mark.parametrize("cmd", rr.params(rr.commands(SECTIONS), XFAIL))
def test_readme_command(session: rr.ReadmeSession, cmd: rr.Command) -> None:
    rr.check(session, cmd)
