"""Fuzzing the folder readers and the CLI with doctored copies of one real run folder (issue #20): every case
ends as one line and exit 2 naming the file, or as an honest `unknown`/`fail`; never `pass`, never a
traceback, never a hang. Two kinds of doctoring: after the run (the seal no longer matches: `unknown`), and
as if the run itself had written odd lines (re-sealed: the reader must count them as holes)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli.commands import cli
from harness.cli.entry import run_cli
from harness.history import manifest
from tests.helpers import assert_one_line_exit_2_or_ran

pytestmark = pytest.mark.slow

RECORD_JSON = ("deployment.json", "counters.json", "reference.json")
JUNK: dict[str, bytes] = {
    "empty": b"", "braces": b"{{", "null": b"null", "list": b"[1]", "number": b"7", "binary": bytes(range(256)),
    "nan": b"NaN", "deep": b"[" * 50000, "huge": b'{"a": 1e999}', "latin1": "caf\xe9".encode("latin-1"),
}


@pytest.fixture(scope="module")
def sealed_run(tmp_path_factory) -> Path:
    """One real run with a crash in it (takeovers, faults and re-run tasks in the history)."""
    out = tmp_path_factory.mktemp("fuzz") / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--load", "builtin",
                           "--design", "centralised", "--fault", "slm-crash", "--set", "n=4", "--set", "t_i=2",
                           "--requests", "6", "--users", "3"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verdict pass" in proc.stdout, proc.stdout[-2000:]
    return out


def analyse(folder: Path, capsys) -> tuple[int, str, str]:
    """`harness analyse FOLDER` through the real command line, in this process (100+ cases in seconds)."""
    try:
        run_cli(cli, ["analyse", str(folder)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_honest(folder: Path, capsys, file: str | None = None) -> str:
    """One line and exit 2 (naming `file` when given), or a verdict that is not `pass`; returns which."""
    code, out, err = analyse(folder, capsys)
    assert_one_line_exit_2_or_ran(code, out, err, file)
    if code == 2:
        return "exit 2"
    (verdict,) = [line for line in out.splitlines() if line.startswith("verdict ")]
    assert not verdict.startswith("verdict pass"), verdict
    assert verdict.startswith(("verdict unknown", "verdict fail")), verdict
    return " ".join(verdict.split()[:2])  # "verdict unknown (its reason): ..." -> "verdict unknown"


def copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run, target)
    return target


def reseal(folder: Path) -> None:
    expected, _ = manifest.check(folder)
    manifest.seal(folder, expected or {})


def test_the_untouched_folder_passes(sealed_run, tmp_path, capsys):
    code, out, _ = analyse(copy(sealed_run, tmp_path), capsys)
    assert code == 0 and "verdict pass" in out


@pytest.mark.parametrize("name", ["config.yaml", *RECORD_JSON])
@pytest.mark.parametrize("junk", sorted(JUNK))
def test_a_record_file_of_junk_is_one_line_naming_it(sealed_run, tmp_path, capsys, name, junk):
    folder = copy(sealed_run, tmp_path)
    (folder / name).write_bytes(JUNK[junk])
    reseal(folder)  # even a folder whose seal matches the junk must not get past the reader
    assert assert_honest(folder, capsys, name) == "exit 2"


@pytest.mark.parametrize("name", ["config.yaml", *RECORD_JSON])
@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_a_truncated_record_file_is_one_line_or_unknown(sealed_run, tmp_path, capsys, name, cut):
    folder = copy(sealed_run, tmp_path)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: int(len(data) * cut)])
    assert_honest(folder, capsys, name)


def _edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        edit(data)
        (folder / name).write_text(json.dumps(data))
    return apply


def _edit_config(edit: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / "config.yaml").write_text(edit((folder / "config.yaml").read_text()))
    return apply


SEMANTIC = {
    "counters.cpu not pairs": ("counters.json", _edit_json("counters.json", lambda d: d.update(cpu={"x": [1]}))),
    "counters.cpu a string": ("counters.json", _edit_json("counters.json", lambda d: d.update(cpu="x"))),
    "counters unknown key": ("counters.json", _edit_json("counters.json", lambda d: d.update(rogue=1))),
    "counters capture a list": ("counters.json", _edit_json("counters.json", lambda d: d.update(capture=[1]))),
    "counters proxy of numbers": ("counters.json", _edit_json("counters.json", lambda d: d.update(proxy={"a": 1}))),
    "counters bad lines text": ("counters.json",
                                _edit_json("counters.json", lambda d: d.update(collector_bad_lines="x"))),
    "counters host_cpu junk": ("counters.json",
                               _edit_json("counters.json", lambda d: d.update(host_cpu={"busy": "x"}))),
    "reference t_m text": ("reference.json", _edit_json("reference.json", lambda d: d.update(t_m="x"))),
    "reference without cpu": ("reference.json", _edit_json("reference.json", lambda d: d.pop("cpu_per_workflow"))),
    "deployment services a number": ("deployment.json",
                                     _edit_json("deployment.json", lambda d: d.update(services=5))),
    "deployment without links": ("deployment.json", _edit_json("deployment.json", lambda d: d.pop("links"))),
    "deployment service junk": ("deployment.json",
                                _edit_json("deployment.json", lambda d: d["services"].append({"rogue": 1}))),
    "deployment entry a number": ("deployment.json", _edit_json("deployment.json", lambda d: d.update(entry=3))),
    "config without z": ("config.yaml", _edit_config(lambda s: s.replace("\nz:", "\nzz:"))),
    "config without run": ("config.yaml", _edit_config(lambda s: s.replace("run:", "ran:", 1))),
    "config n negative": ("config.yaml", _edit_config(lambda s: s.replace("\n  n: 4", "\n  n: -4"))),
    "config n text": ("config.yaml", _edit_config(lambda s: s.replace("\n  n: 4", "\n  n: four"))),
    "config a list": ("config.yaml", _edit_config(lambda s: "- 1\n- 2\n")),
    "config swarm junk": ("config.yaml", _edit_config(lambda s: s + "swarm:\n  clock_offsets: [1]\n")),
}


@pytest.mark.parametrize("case", sorted(SEMANTIC))
@pytest.mark.parametrize("sealed", [False, True], ids=["doctored", "resealed"])
def test_a_record_file_that_parses_but_lies_about_its_shape(sealed_run, tmp_path, capsys, case, sealed):
    name, apply = SEMANTIC[case]
    folder = copy(sealed_run, tmp_path)
    apply(folder)
    if sealed:
        reseal(folder)
    assert_honest(folder, capsys, name)


@pytest.mark.parametrize("cut", [0.0, 0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 0.999])
@pytest.mark.parametrize("sealed", [False, True], ids=["doctored", "resealed"])
def test_a_history_cut_short_is_never_a_pass(sealed_run, tmp_path, capsys, cut, sealed):
    folder = copy(sealed_run, tmp_path)
    data = (folder / "events.jsonl").read_bytes()
    (folder / "events.jsonl").write_bytes(data[: int(len(data) * cut)])
    if sealed:  # as if the run itself had stopped writing there
        reseal(folder)
    assert_honest(folder, capsys)


BAD_LINES = [b"[1]", b"{}", b"null", b"{broken", b"\xff\xfe", b'{"t": 1, "svc": "bss", "kind": "teleported"}',
             b'{"t": 1, "svc": "bss", "kind": "completed", "by": "x", "n": 1}', b"[" * 5000, b"",
             b'{"t": "now", "svc": "bss", "kind": "submitted", "req": "r", "to": 1}']


@pytest.mark.parametrize("bad", range(len(BAD_LINES)))
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_line_that_is_not_an_event_is_a_hole_even_in_a_sealed_history(sealed_run, tmp_path, capsys, bad, where):
    folder = copy(sealed_run, tmp_path)
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")[:-1]
    at = {"start": 0, "middle": len(lines) // 2, "end": len(lines)}[where]
    lines.insert(at, BAD_LINES[bad])
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reseal(folder)
    assert assert_honest(folder, capsys) == "verdict unknown"


def _lines_of(folder: Path, kind: str) -> tuple[list[bytes], list[int]]:
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")[:-1]
    found = [i for i, line in enumerate(lines)
             if json.loads(line)["kind"] == kind and not json.loads(line).get("warmup")]
    return lines, found


def test_a_duplicated_completion_in_a_sealed_history_fails(sealed_run, tmp_path, capsys):
    folder = copy(sealed_run, tmp_path)
    lines, found = _lines_of(folder, "completed")
    lines.append(lines[found[0]])
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reseal(folder)
    assert assert_honest(folder, capsys) == "verdict fail"


def test_a_missing_completion_in_a_sealed_whole_history_fails(sealed_run, tmp_path, capsys):
    folder = copy(sealed_run, tmp_path)
    lines, found = _lines_of(folder, "completed")
    del lines[found[-1]]
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reseal(folder)
    assert assert_honest(folder, capsys) == "verdict fail"


def test_a_missing_submission_in_a_sealed_history_is_unknown(sealed_run, tmp_path, capsys):
    folder = copy(sealed_run, tmp_path)
    lines, found = _lines_of(folder, "submitted")
    del lines[found[0]]
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reseal(folder)
    assert assert_honest(folder, capsys) == "verdict unknown"


@pytest.mark.parametrize("seed", range(12))
def test_random_line_surgery_on_the_history_is_never_a_pass(sealed_run, tmp_path, capsys, seed):
    rng = random.Random(seed)
    folder = copy(sealed_run, tmp_path)
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")[:-1]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        op = rng.choice(["drop", "dup", "flip", "swap"])
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "flip":
            raw = bytearray(lines[i])
            raw[rng.randrange(len(raw))] = rng.randrange(256)
            lines[i] = bytes(raw)
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert_honest(folder, capsys)  # not re-sealed: the seal no longer matches


@pytest.mark.parametrize("doctor", ["missing", "empty", "junk", "files a list", "appended run"])
def test_a_broken_or_missing_seal_is_unknown(sealed_run, tmp_path, capsys, doctor):
    folder = copy(sealed_run, tmp_path)
    seal = folder / "manifest.json"
    if doctor == "missing":
        seal.unlink()
    elif doctor == "empty":
        seal.write_text("")
    elif doctor == "junk":
        seal.write_bytes(JUNK["binary"])
    elif doctor == "files a list":
        seal.write_text(json.dumps({"files": [1], "expected": {}}))
    else:  # a second run's history appended to the first
        events = folder / "events.jsonl"
        events.write_bytes(events.read_bytes() * 2)
    assert assert_honest(folder, capsys) == "verdict unknown"


@pytest.mark.parametrize("args,message", [
    (["analyse", "/nonexistent/run"], "no such directory"),
    (["analyse", "/"], "missing config.yaml"),
])
def test_analyse_of_what_is_not_a_run_folder_is_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(cli, args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and message in err[0]


def test_a_second_run_into_the_same_folder_is_refused_before_anything_starts(sealed_run, tmp_path):
    folder = copy(sealed_run, tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(folder), "--requests", "4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "not empty" in proc.stderr and "--force" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_force_replaces_only_a_run_folder(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(precious), "--force"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a run folder" in proc.stderr and "Traceback" not in proc.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"
