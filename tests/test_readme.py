"""The README is executable, and every MANOBENCH_* variable is documented (issue #24).

Every command of the README's ```sh blocks is run as written, from the repository root with the default
paths (tests/readme_runner.py has the rules: the one time reduction, placeholders, the skip markers). This file
runs the sections tests/test_readme_bus_swarm_sweep.py does not (so a new section runs here without being
listed), and checks the rules themselves: a marker without a reason, a command added to a marked block, a stray
marker or an unknown placeholder fail here, before anything runs; and docs/environment.md's table must list
exactly the MANOBENCH_* variables the code names.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator

import pytest
import readme_runner as rr
import test_readme_bus_swarm_sweep as other

from harness.runtime.local import SESSION_ENV

# --- the README's rules, before anything runs --------------------------------------------------------------

def test_every_readme_command_is_run_by_one_file_or_skipped_with_its_reason() -> None:
    blocks = rr.readme_blocks()  # raises ReadmeError on a marker without a reason, a count mismatch, ...
    cmds = [c for b in blocks for c in b.commands]
    assert len(cmds) >= 15, f"only {len(cmds)} commands read: is the parser still reading the README?"
    sections = {b.section for b in blocks if b.commands}
    assert sections >= other.SECTIONS, f"sections the other file runs that the README no longer has: " \
                                       f"{sorted(other.SECTIONS - sections)}"
    here = rr.commands(exclude=other.SECTIONS)
    there = rr.commands(other.SECTIONS)
    assert sorted(c.line for c in here + there) == sorted(c.line for c in cmds)
    assert not {c.line for c in here} & {c.line for c in there}
    for c in cmds:
        if c.marker is not None and c.marker.kind == "skip":
            assert len(c.marker.note) >= 10, f"README line {c.line}: a reason, please: {c.marker.note!r}"


def test_the_first_block_is_what_ci_runs() -> None:
    first = rr.readme_blocks()[0]
    assert [c.code for c in first.commands] == ["make run", "make test"]
    assert all(c.marker is not None and c.marker.kind == "skip" for c in first.commands)


def test_placeholders_are_known_and_have_a_run_before_them() -> None:
    seen_run: set[str] = set()
    for c in rr.commands():
        if re.search(r"\bharness (run|sweep)\b", c.code):
            seen_run.add(c.section)
        for name in c.placeholders():
            assert name == "run", f"README line {c.line}: unknown placeholder <{name}>"
            assert c.section in seen_run, f"README line {c.line}: <run> with no `harness run` before it"


def test_the_readme_states_the_reduction_beside_every_block_with_runs() -> None:
    for b in rr.readme_blocks():
        if any(re.search(r"\bharness run\b", c.code) and c.marker is None for c in b.commands):
            prose = " ".join(b.after.split())
            assert rr.REDUCTION in prose and "README test" in prose, \
                f"README line {b.line}: say beside the block that the README test adds `{rr.REDUCTION}`"


@pytest.mark.parametrize(("text", "complaint"), [
    ("<!-- readme-test: skip -->\n```sh\nmake run\n```\n", "needs a reason"),
    ("<!-- readme-test: skip:   -->\n```sh\nmake run\n```\n", "needs a reason"),
    ("<!-- readme-test: skip: too slow -->\n```sh\nmake run\nmake test\n```\n", "1 readme-test marker(s) for 2"),
    ("<!-- readme-test: skip: x -->\n\n```sh\nmake run\n```\n", "right before a fence"),
    ("<!-- readme-test: maybe: x -->\n```sh\nmake run\n```\n", "unknown readme-test marker"),
    ("<!-- readme-test skip x -->\n```sh\nmake run\n```\n", "malformed"),
    ("```bash\nmake run\n```\n", "write ```sh"),
    ("```\n.venv/bin/harness run\n```\n", "without a language"),
    ("```sh\nmake run\n```\n<!-- readme-test: skip: at the end -->\n", "after the last block"),
])
def test_the_parser_refuses_what_would_let_a_command_escape(text: str, complaint: str) -> None:
    with pytest.raises(rr.ReadmeError, match=re.escape(complaint)):
        rr.parse(text)


def test_the_parser_reads_commands_markers_and_what_a_command_needs() -> None:
    blocks = rr.parse("# T\n## S\n<!-- readme-test: skip: reason one -->\n<!-- readme-test: if-no-swarm -->\n"
                      "```sh\n# a comment line\nmake x   # with a comment\n\ndocker swarm leave --force\n```\n"
                      "after the block\n```sh\n.venv/bin/harness run --runtime docker\n"
                      ".venv/bin/harness analyse results/<run>  # again\n```\n")
    assert [b.section for b in blocks] == ["S", "S"] and "after the block" in blocks[0].after
    a, b = blocks[0].commands
    assert (a.code, a.marker and a.marker.kind, a.marker and a.marker.note) == ("make x", "skip", "reason one")
    assert b.marker is not None and b.marker.kind == "if-no-swarm" and b.needs_docker() and b.touches_swarm()
    run, analyse = blocks[1].commands
    assert run.needs_docker() and run.needs_image() and run.starts_deployments()
    assert run.as_run() == f".venv/bin/harness run --runtime docker {rr.REDUCTION}"
    assert analyse.as_run("r1") == ".venv/bin/harness analyse results/r1"
    with pytest.raises(rr.ReadmeError, match="no earlier command"):
        analyse.as_run(None)
    assert not a.needs_docker() and not a.starts_deployments()


def test_a_failing_command_fails_and_only_the_folders_a_command_names_are_removed() -> None:
    """The runner itself: a non-zero exit is a failure; of two new folders in results/, the one the command
    names is its own (removed at the end), the other is someone else's (left alone)."""
    tag = uuid.uuid4().hex[:8]
    mine, theirs = f"readme-probe-{tag}-mine", f"readme-probe-{tag}-theirs"
    session = rr.ReadmeSession(None)
    failing = rr.Command(1, "exit 3   # a README command that fails", "S", 0)
    with pytest.raises(AssertionError, match="exit 3"):
        rr.check(session, failing)
    other_process = f"t=theirs; mkdir -p results/readme-probe-{tag}-$t"  # made now, but named nowhere
    made = rr.Command(2, f"{other_process}; mkdir -p results/{mine} && echo results in results/{mine}", "S", 0)
    try:
        outcome = session.run(made)
        assert outcome.code == 0 and outcome.made == [mine] and session.made == [mine]
        assert session.close() == []
        assert not (rr.RESULTS / mine).exists() and (rr.RESULTS / theirs).is_dir()
    finally:
        for name in (mine, theirs):
            shutil.rmtree(rr.RESULTS / name, ignore_errors=True)


def test_a_command_naming_a_folder_that_was_there_before_is_not_run() -> None:
    """A README sweep would resume (and the test then could not tell apart) a folder someone already had."""
    name = f"readme-probe-{uuid.uuid4().hex[:8]}"
    (rr.RESULTS / name).mkdir(parents=True)
    try:
        cmd = rr.Command(1, f".venv/bin/harness fit results/{name}", "S", 0)
        why = rr.ReadmeSession(None).stale_output(cmd)
        assert why is not None and f"results/{name} was there before" in why
    finally:
        (rr.RESULTS / name).rmdir()


# --- every MANOBENCH_* variable in one table ---------------------------------------------------------------

def test_the_environment_table_lists_exactly_the_variables_the_code_names() -> None:
    table = rr.environment_table()
    code = rr.variables_in_code()
    assert len(code) >= 15, f"only {sorted(code)}: is the grep still reading the sources?"
    missing = {name: files for name, files in code.items() if name not in table}
    assert not missing, f"MANOBENCH_* variables the code names but docs/environment.md does not: {missing}"
    stale = sorted(set(table) - set(code))
    assert not stale, f"docs/environment.md documents variables no code names any more: {stale}"
    for name, row in table.items():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert len(cells) == 4 and all(cells), f"{name}: every column (variable, default, read by, meaning): {row}"


def test_the_readme_links_the_environment_table() -> None:
    assert "docs/environment.md" in rr.README.read_text(encoding="utf-8")


# --- the commands of every other section, run ---------------------------------------------------------------

@pytest.fixture(scope="module")
def session() -> Iterator[rr.ReadmeSession]:
    s = rr.ReadmeSession(os.environ.get(SESSION_ENV))
    yield s
    problems = s.close()
    assert not problems, problems


@pytest.mark.parametrize("cmd", rr.params(rr.commands(exclude=other.SECTIONS)))
def test_readme_command(session: rr.ReadmeSession, cmd: rr.Command) -> None:
    rr.check(session, cmd)
