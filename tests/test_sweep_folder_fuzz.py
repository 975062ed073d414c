"""Fuzzing `harness fit`, `report` and `optimise DIR` with doctored copies of one real, small sweep folder
(issue #20): whatever is wrong with sweep.yaml, trials.csv or a trial's files, each command ends as one line
and exit 2 naming the file, or does its work on what it can read; never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli.commands import cli
from harness.cli.entry import run_cli
from tests.helpers import assert_one_line_exit_2_or_ran

pytestmark = pytest.mark.slow

SPEC = """\
description: "a two-point sweep for the readers' fuzz test"
base: {design: centralised, n: 3, t_i: 1.0, t_o: 0.1, time_scale: 0.1, fault: slm-crash, fault_at: "task:2",
       requests: 4, users: 2, s_z: 20, P_a: 10, P_b: 10, P: 20}
points:
  - {h_r: 2}
  - {h_r: 4}
repeat: 1
"""
COMMANDS = {"fit": ["fit"], "report": ["report"], "optimise": ["optimise", "--weights", "1,1,0.01,1"]}
JUNK = {"empty": b"", "binary": bytes(range(256)), "braces": b"{{", "list": b"- 1\n- 2\n", "null": b"null"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweepfuzz")
    (root / "spec.yaml").write_text(SPEC)
    out = root / "sweep"
    proc = subprocess.run([sys.executable, "-m", "harness", "sweep", str(root / "spec.yaml"), "--out", str(out),
                           "--load", "builtin", "--jobs", "1"], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def command(name: str, folder: Path, capsys) -> tuple[int, str, str]:
    args = COMMANDS[name]
    try:
        run_cli(cli, [args[0], str(folder), *args[1:]])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_or_done(name: str, folder: Path, capsys, file: str | None = None) -> int:
    code, out, err = command(name, folder, capsys)
    assert_one_line_exit_2_or_ran(code, out, err, file)
    return code


def doctored(sweep: Path, tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    folder = tmp_path / "copy"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(sweep, folder)
    edit(folder)
    return folder


def first_trial(folder: Path) -> Path:
    return sorted((folder / "trials").iterdir())[0]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_untouched_sweep_is_read(sweep, tmp_path, capsys, name):
    code, out, err = command(name, doctored(sweep, tmp_path, lambda f: None), capsys)
    assert code == 0 and out.strip(), err


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("junk", sorted(JUNK))
def test_a_sweep_yaml_of_junk_is_one_line_naming_it(sweep, tmp_path, capsys, name, junk):
    folder = doctored(sweep, tmp_path, lambda f: (f / "sweep.yaml").write_bytes(JUNK[junk]))
    assert assert_one_line_or_done(name, folder, capsys, "sweep.yaml") == 2


def _points_junk(folder: Path) -> None:
    (folder / "sweep.yaml").write_text("points: [1, 2]\nspec: {}\n")


def _spec_a_list(folder: Path) -> None:
    text = (folder / "sweep.yaml").read_text()
    (folder / "sweep.yaml").write_text(text + "\nspec: [1]\n" if "\nspec:" not in text else
                                       text.replace("\nspec:", "\nspec: [1]\nold_spec:", 1))


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("edit", [_points_junk, _spec_a_list], ids=["points junk", "spec a list"])
def test_a_sweep_yaml_of_the_wrong_shape_is_one_line(sweep, tmp_path, capsys, name, edit):
    assert assert_one_line_or_done(name, doctored(sweep, tmp_path, edit), capsys, "sweep.yaml") == 2


TRIALS_CSV = {
    "binary": lambda f: (f / "trials.csv").write_bytes(JUNK["binary"]),
    "torn": lambda f: (f / "trials.csv").write_bytes((f / "trials.csv").read_bytes()[:-7]),
    "empty": lambda f: (f / "trials.csv").write_text(""),
    "repeat not a number": lambda f: (f / "trials.csv").write_text(
        (f / "trials.csv").read_text().replace(",1,", ",one,", 1) if ",1," in (f / "trials.csv").read_text()
        else "trial,point,repeat\nx,p,one\n"),
    "a trial id that is a path": lambda f: (f / "trials.csv").write_text("trial,point,repeat\n../../etc,p,1\n"),
    "no trial column": lambda f: (f / "trials.csv").write_text("a,b\n1,2\n"),
    "quotes unclosed": lambda f: (f / "trials.csv").write_text('trial,point,repeat\n"x,p,1\n'),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(TRIALS_CSV))
def test_a_doctored_trials_index_is_one_line_or_read_as_far_as_it_goes(sweep, tmp_path, capsys, name, case):
    assert_one_line_or_done(name, doctored(sweep, tmp_path, TRIALS_CSV[case]), capsys)


TRIAL_FILES = {
    "config junk": ("config.yaml", lambda t: (t / "config.yaml").write_bytes(JUNK["braces"])),
    "config a list": ("config.yaml", lambda t: (t / "config.yaml").write_bytes(JUNK["list"])),
    "events binary": (None, lambda t: (t / "events.jsonl").write_bytes(JUNK["binary"])),
    "events cut": (None, lambda t: (t / "events.jsonl").write_bytes((t / "events.jsonl").read_bytes()[:500])),
    "counters null": ("counters.json", lambda t: (t / "counters.json").write_bytes(JUNK["null"])),
    "deployment empty": ("deployment.json", lambda t: (t / "deployment.json").write_bytes(b"")),
    "cpu.csv binary": ("cpu.csv", lambda t: (t / "cpu.csv").write_bytes(JUNK["binary"])),
    "links.csv binary": ("links.csv", lambda t: (t / "links.csv").write_bytes(JUNK["binary"])),
    "affected.csv junk": (None, lambda t: (t / "affected.csv").write_text("req,lost_time\nx,notanumber\n")),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(TRIAL_FILES))
def test_a_doctored_trial_is_one_line_naming_its_file_or_read(sweep, tmp_path, capsys, name, case):
    file, edit = TRIAL_FILES[case]
    assert_one_line_or_done(name, doctored(sweep, tmp_path, lambda f: edit(first_trial(f))), capsys, file)
