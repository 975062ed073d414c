"""The README as a test: every command of its ```sh blocks, read and run as written.

Why: the README is what a new user types first, and nothing else checked it. Issue #24 found both bus commands
failing from the default relative run folder while the suite (which always passes an absolute `--out`) stayed
green. Reading the commands from the README itself means a command added, changed or broken there is run here
with no second list to keep in step.

The rules, which the README states beside its blocks:

- Every command runs from the repository root with the default paths (runs write `results/...`), through
  `bash -c`, so the trailing `# comment` stays a comment and `.venv/bin/harness` is the one the README names.
- The only change to a command is the time reduction `REDUCTION` (`--set requests=4`: one round of the default
  four users instead of five), added to every `harness run`; the README says so beside each block with runs.
- `results/<run>` stands for the run folder the section's earlier commands made (the newest); any other `<...>`
  placeholder is an error.
- A marker, an HTML comment on the line(s) right before a fence, stands for the block's commands one by one,
  in order (so a command added to a marked block makes the counts differ and fails the parse):
  `<!-- readme-test: skip: REASON -->` (the command cannot run here; the reason is required), or
  `<!-- readme-test: if-no-swarm: NOTE -->` (run it only if the Engine was in no swarm when the section's first
  swarm command came: the README's own condition for `docker swarm init` and `docker swarm leave`).
- Commands that need Docker (`docker ...`, `harness swarm ...`, `--runtime docker|swarm`) are skipped, with the
  reason, where no Engine answers or the services' image was never built (`make run`/`scripts/setup.sh` builds
  it).

`ReadmeSession` runs them for one test module: it removes exactly the top-level `results/` entries its commands
made (new after the command, and named in its output or command line, so another process's runs in
`results/` are never touched), checks that nothing of the suite's session is left running after each
command, and leaves the swarm as it found it (serialised with other swarm users by `SWARM_LOCK`). A README run
into a default folder starts in a wall-clock second of its own (`RUN_START_LOCK`, `_until_named`): the two
halves of the README test run at once on the suite's two workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results"
ENV_DOC = ROOT / "docs" / "environment.md"
REDUCTION = "--set requests=4"  # added to every `harness run`: one round of the default 4 users, not five
RUN_START_LOCK = Path("/tmp/manobench-readme-run-start.lock")  # README runs of default folders: one second each
SWARM_LOCK = Path("/tmp/manobench-swarm.lock")  # held while a test changes or relies on the Engine's swarm state
TARGET_IMAGE = "manobench-target:latest"

FENCE = re.compile(r"^```(?P<info>\S*)\s*$")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>[a-z-]+)\s*(?::\s*(?P<note>.*?))?\s*-->\s*$")
STRAY_MARKER = re.compile(r"readme-test", re.IGNORECASE)
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*$")
PLACEHOLDER = re.compile(r"<(?P<name>[A-Za-z_-]+)>")
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
KINDS = {"skip", "if-no-swarm"}


class ReadmeError(ValueError):
    """The README breaks a rule of the README test (a marker without a reason, a count that does not match...)."""


@dataclass(frozen=True)
class Marker:
    kind: str  # "skip" | "if-no-swarm"
    note: str  # the reason (required for skip)
    line: int


@dataclass(frozen=True)
class Command:
    """One command line of a ```sh block, with where it is and what (if anything) marks it."""

    line: int  # 1-based line in the README
    text: str  # as written, trailing comment included
    section: str  # the heading above it
    block: int  # index of its block in the README
    marker: Marker | None = None

    @property
    def code(self) -> str:
        """The command without its trailing comment."""
        return re.split(r"\s+#\s", " " + self.text.strip(), maxsplit=1)[0].strip()

    @property
    def id(self) -> str:
        return f"L{self.line}: {self.code[:90]}"

    def needs_docker(self) -> bool:
        code = self.code
        return bool(re.match(r"docker(-compose)?\s", code) or re.search(r"\bharness swarm\b", code)
                    or re.search(r"--runtime[ =](docker|swarm)\b", code))

    def touches_swarm(self) -> bool:
        return bool(re.search(r"\bswarm\b", self.code))

    def needs_image(self) -> bool:
        return bool(re.search(r"--runtime[ =](docker|swarm)\b", self.code) or re.search(r"\bharness swarm\b",
                                                                                        self.code))

    def starts_deployments(self) -> bool:
        """Whether it runs a design (or reads what such a command wrote): the suite's `slow` tests."""
        return bool(re.search(r"\bharness (run|sweep)\b", self.code) or "results/" in self.code)

    def placeholders(self) -> list[str]:
        return [m["name"] for m in PLACEHOLDER.finditer(self.code)]

    def as_run(self, run_folder: str | None = None) -> str:
        """The command the test runs: `<run>` filled with `run_folder` (a name in results/), `REDUCTION` added
        to a `harness run`."""
        code = self.code
        for name in self.placeholders():
            if name != "run":
                raise ReadmeError(f"README line {self.line}: unknown placeholder <{name}> (the test fills <run>)")
            if run_folder is None:
                raise ReadmeError(f"README line {self.line}: <run> but no earlier command of the section made a run")
            code = code.replace("<run>", run_folder)
        if re.search(r"\bharness run\b", code):
            code = f"{code} {REDUCTION}"
        return code


@dataclass
class Block:
    index: int
    line: int  # the opening fence
    info: str
    section: str
    commands: list[Command] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    after: str = ""  # the prose after the block, up to the next heading


def parse(text: str) -> list[Block]:
    """Every fenced block of a shell language, with its commands and markers; ReadmeError on a broken rule."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section = ""
    pending: list[Marker] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        if (m := MARKER.match(raw.strip())) is not None:
            kind, note = m["kind"], (m["note"] or "").strip()
            if kind not in KINDS:
                raise ReadmeError(f"README line {i + 1}: unknown readme-test marker {kind!r} (known: {sorted(KINDS)})")
            if kind == "skip" and not note:
                raise ReadmeError(f"README line {i + 1}: a skip marker needs a reason: <!-- readme-test: skip: WHY -->")
            pending.append(Marker(kind, note, i + 1))
            i += 1
            continue
        if STRAY_MARKER.search(raw) and raw.lstrip().startswith("<!--"):
            raise ReadmeError(f"README line {i + 1}: malformed readme-test marker: {raw.strip()!r}")
        fence = FENCE.match(raw)
        if fence is None:
            if pending:
                raise ReadmeError(f"README line {pending[0].line}: a readme-test marker must be right before a fence")
            if (h := HEADING.match(raw)) is not None:
                section = h["title"]
            elif blocks and blocks[-1].section == section:
                blocks[-1].after += raw + "\n"
            i += 1
            continue
        start, info = i, fence["info"]
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence
        if info not in SHELLS:
            if info == "" and any(re.match(r"\s*(\.venv/bin/|harness |docker |make )", t) for _, t in body):
                raise ReadmeError(f"README line {start + 1}: commands in a fence without a language: write ```sh")
            if pending:
                raise ReadmeError(f"README line {pending[0].line}: a readme-test marker before a non-shell block")
            continue
        if info != "sh":
            raise ReadmeError(f"README line {start + 1}: ```{info}: the README test reads ```sh blocks; write ```sh")
        block = Block(len(blocks), start + 1, info, section, markers=pending)
        pending = []
        joined: list[tuple[int, str]] = []
        for n, t in body:
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + t.strip())
            else:
                joined.append((n, t))
        cmds = [(n, t) for n, t in joined if t.strip() and not t.strip().startswith("#")]
        if block.markers and len(block.markers) != len(cmds):
            raise ReadmeError(
                f"README line {start + 1}: {len(block.markers)} readme-test marker(s) for {len(cmds)} command(s): "
                "each marker stands for one command of the block, in order (a command added to a marked block "
                "needs its own marker, or a block of its own)")
        for k, (n, t) in enumerate(cmds):
            block.commands.append(Command(n, t.strip(), section, block.index,
                                          block.markers[k] if block.markers else None))
        blocks.append(block)
    if pending:
        raise ReadmeError(f"README line {pending[0].line}: a readme-test marker after the last block")
    return blocks


def readme_blocks() -> list[Block]:
    return parse(README.read_text(encoding="utf-8"))


def commands(sections: set[str] | None = None, exclude: frozenset[str] | set[str] = frozenset()) -> list[Command]:
    """The README's commands in order: of `sections` (None: all), but those of `exclude`."""
    return [c for b in readme_blocks() for c in b.commands
            if (sections is None or b.section in sections) and b.section not in exclude]


def environment_table() -> dict[str, str]:
    """docs/environment.md's table: variable -> its row."""
    rows = {}
    for line in ENV_DOC.read_text(encoding="utf-8").splitlines():
        if (m := re.match(r"^\|\s*`(MANOBENCH_[A-Z0-9_]+)`\s*\|", line)) is not None:
            rows[m[1]] = line
    return rows


VARIABLE = re.compile(r"MANOBENCH_[A-Z][A-Z0-9_]*")
SOURCE_DIRS = ("harness", "targets", "protocol", "tests", "benchmarks", "scripts", "docker")
NOT_SOURCES = {"tests/readme_runner.py", "tests/test_readme.py", "tests/test_readme_bus_swarm_sweep.py"}


def variables_in_code() -> dict[str, list[str]]:
    """Every MANOBENCH_* name the code reads or sets: variable -> the files naming it (the README test's own
    files excluded: they name variables only to check the table)."""
    found: dict[str, list[str]] = {}
    files = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*") if p.is_file()] + [ROOT / "Makefile"]
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in NOT_SOURCES or "__pycache__" in rel or path.suffix in {".pyc", ".png"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for name in set(VARIABLE.findall(text)):
            found.setdefault(name, []).append(rel)
    return found


# --- running ------------------------------------------------------------------------------------------------

def docker_missing(cmd: Command) -> str | None:
    """Why a command that needs Docker cannot run here, or None."""
    if not cmd.needs_docker():
        return None
    from harness.runtime import image

    ok, why = image.available()
    if not ok:
        return f"no Docker here: {why}"
    if cmd.needs_image() and not image.exists(TARGET_IMAGE):
        return f"the image {TARGET_IMAGE} was never built here (`make run` or `harness image build` builds it)"
    return None


def swarm_state() -> str:
    from harness.runtime import engine

    return str(engine.client().info()["Swarm"]["LocalNodeState"])


def network_names() -> set[str]:
    """The Engine's networks but those a harness run labelled (another test worker's runs come and go)."""
    from harness.runtime import engine

    return {n["Name"] for n in engine.client().api.networks() if "manobench" not in (n.get("Labels") or {})}


@contextlib.contextmanager
def swarm_lock() -> Iterator[None]:
    """Machine-wide: one test at a time may change the Engine's swarm state or rely on it staying."""
    with SWARM_LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Outcome:
    command: str
    code: int
    out: str
    err: str
    seconds: float
    made: list[str]


class ReadmeSession:
    """The README's commands of one test module, run in order, and everything they leave cleaned up."""

    def __init__(self, session: str | None) -> None:
        self.session = session
        self.made: list[str] = []  # top-level entries of results/ our commands made, in order
        self.runs: dict[str, list[str]] = {}  # section -> names of the run folders it made in results/
        self.outcomes: list[Outcome] = []
        self.swarm_found: str | None = None  # the swarm state before the first swarm command
        self.networks_found: set[str] = set()
        self.swarm_initialised = False
        self._lock: IO[Any] | None = None

    # swarm ------------------------------------------------------------------------------------------------
    def _enter_swarm(self) -> None:
        if self._lock is None:
            self._lock = SWARM_LOCK.open("a")
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            self.swarm_found = swarm_state()
            self.networks_found = network_names()

    def skip_reason(self, cmd: Command) -> str | None:
        """Why this command does not run now (its marker, Docker, the swarm's state), or None."""
        if cmd.marker is not None and cmd.marker.kind == "skip":
            return f"README: {cmd.marker.note}"
        if (why := docker_missing(cmd)) is not None:
            return why
        if cmd.touches_swarm():
            self._enter_swarm()
        if cmd.marker is not None and cmd.marker.kind == "if-no-swarm" and self.swarm_found != "inactive":
            return (f"the Engine was already in a swarm ({self.swarm_found}) before the README's commands: "
                    "the README runs this only if it was in none")
        if re.match(r"docker swarm leave\b", cmd.code) and not self.swarm_initialised:
            return "the README's `docker swarm init` did not make a swarm here: nothing of ours to leave"
        return None

    def stale_output(self, cmd: Command) -> str | None:
        """Why a command must not run here: it names a results/ folder that was there before this module's
        commands made it (a sweep would resume someone's folder, and the test could not tell it from its own)."""
        for name in re.findall(r"results/([^\s/<>]+)", cmd.code):
            if (RESULTS / name).exists() and name not in self.made:
                return (f"results/{name} was there before the README's commands: its `{cmd.code}` would use it; "
                        "move it away to run this")
        return None

    # running ----------------------------------------------------------------------------------------------
    def run(self, cmd: Command, timeout: float = 600) -> Outcome:
        """Run one command as written (reduced by REDUCTION), record what it made; the caller asserts.

        The command runs in a session of its own, so a time-out ends the harness under `bash -c` too, not
        only the shell."""
        runs = self.runs.get(cmd.section, [])
        line = cmd.as_run(runs[-1] if runs else None)
        staggered = bool(re.search(r"\bharness run\b", line)) and "--out" not in line
        with contextlib.ExitStack() as stack:
            if staggered:
                lock = stack.enter_context(RUN_START_LOCK.open("a"))
                fcntl.flock(lock, fcntl.LOCK_EX)
            out = stack.enter_context(tempfile.TemporaryFile("w+"))
            err = stack.enter_context(tempfile.TemporaryFile("w+"))
            before = _entries()
            t0 = time.monotonic()
            proc = subprocess.Popen(["bash", "-c", line], cwd=ROOT, stdout=out, stderr=err, text=True,
                                    env={**os.environ}, stdin=subprocess.DEVNULL, start_new_session=True)
            if staggered:
                _until_named(proc, before)
                fcntl.flock(lock, fcntl.LOCK_UN)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)  # the harness's ordered teardown
                try:
                    code = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    code = proc.wait()
            seconds = time.monotonic() - t0
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        said = f"{line}\n{stdout}\n{stderr}"
        made = sorted(n for n in _entries() - before if re.search(rf"results/{re.escape(n)}(\b|/|$)", said))
        self.made += made
        if re.search(r"\bharness (run|sweep)\b", line):
            self.runs.setdefault(cmd.section, []).extend(made)
        if re.match(r"docker swarm init\b", cmd.code) and code == 0:
            self.swarm_initialised = True
        if re.match(r"docker swarm leave\b", cmd.code) and code == 0:
            self.swarm_initialised = False
            self._restore_networks()
        outcome = Outcome(line, code, stdout, stderr, seconds, made)
        self.outcomes.append(outcome)
        return outcome

    def left_running(self, wait: float = 15.0) -> list[str]:
        """What of this test session is still running (processes, containers, networks, swarm services),
        after waiting up to `wait` s for teardowns that end asynchronously; ended and removed if any."""
        from harness.runtime import leftovers

        if not self.session:
            return []
        deadline = time.monotonic() + wait
        while True:
            procs = leftovers.processes(session=self.session)
            objects = leftovers.docker_objects(session=self.session)
            if (not procs and not objects) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        names = []
        for p in procs:
            with contextlib.suppress(Exception):
                names.append(" ".join(p.cmdline())[:100])
        names += [f"{o['kind']} {o['name']}" for o in objects]
        if procs:
            leftovers.end(procs)
        if objects:
            leftovers.remove_docker(objects)
        return names

    def _restore_networks(self) -> None:
        """`docker swarm leave` keeps the docker_gwbridge network `swarm init` made: remove it if it is new."""
        from harness.runtime import engine

        for name in network_names() - self.networks_found:
            if name == "docker_gwbridge":
                engine.client().api.remove_network(name)

    def close(self) -> list[str]:
        """Remove what the commands made; leave the swarm as found; returns what had to be put right."""
        problems = []
        for name in self.made:
            path = RESULTS / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()
        if self._lock is not None:
            try:
                if self.swarm_initialised and swarm_state() != "inactive":
                    from harness.runtime import engine

                    problems.append("the swarm the README's `docker swarm init` made was still there: left it")
                    engine.client().swarm.leave(force=True)
                    self._restore_networks()
                if self.swarm_found is not None and swarm_state() != self.swarm_found:
                    problems.append(f"swarm state {swarm_state()!r}, found {self.swarm_found!r}")
                if network_names() != self.networks_found:
                    problems.append(f"networks changed: {sorted(network_names() ^ self.networks_found)}")
            finally:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
                self._lock = None
        return problems


def _until_named(proc: subprocess.Popen[str], before: set[str], limit: float = 20.0) -> None:
    """Wait until a started `harness run` has made its folder (or ended), then until the wall clock's second
    has turned. Why: the default folder is `results/<time to the second>-<design>-<fault>`, and the suite's
    two workers run the README's halves at once; both halves begin with a centralised slm-crash run (one on
    the bus), and two such runs started in the same second collided on one folder (the second refused, exit
    2: a harness bug, reported, that a user running the README's commands one after another does not meet).
    Holding RUN_START_LOCK through this keeps the two halves' runs in different seconds."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and not (_entries() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0 - time.time() % 1.0 + 0.05)


def _entries() -> set[str]:
    return {p.name for p in RESULTS.iterdir()} if RESULTS.is_dir() else set()


def params(cmds: list[Command], xfail: dict[str, str] | None = None) -> list[Any]:
    """pytest params of the commands: `slow` where they start deployments, `docker` where they need Docker,
    a long time-out, and xfail(strict) for commands matching a key of `xfail` (a regex on the command)."""
    import pytest

    out = []
    for cmd in cmds:
        marks: list[Any] = [pytest.mark.timeout(900)]
        if cmd.starts_deployments():
            marks.append(pytest.mark.slow)
        if cmd.needs_docker():
            marks.append(pytest.mark.docker)
        for pattern, reason in (xfail or {}).items():
            if re.search(pattern, cmd.code):
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
        out.append(pytest.param(cmd, marks=marks, id=cmd.id))
    return out


def check(session: ReadmeSession, cmd: Command) -> None:
    """The test of one README command: skipped only for a stated reason, else it must exit 0, and leave
    nothing of the test session running."""
    import pytest

    if (why := session.skip_reason(cmd)) is not None:
        pytest.skip(why)
    if (why := session.stale_output(cmd)) is not None:
        pytest.skip(why)
    outcome = session.run(cmd)
    left = session.left_running()
    assert outcome.code == 0, (f"README line {cmd.line} failed (exit {outcome.code}, {outcome.seconds:.0f} s): "
                               f"{outcome.command}\n--- stdout\n{outcome.out[-3000:]}\n--- stderr\n"
                               f"{outcome.err[-3000:]}")
    assert "Traceback" not in outcome.err, outcome.err[-3000:]
    assert not left, f"README line {cmd.line} left running: {left}"
    if re.search(r"\bharness (run|sweep)\b", cmd.code):
        assert outcome.made, f"README line {cmd.line}: no new folder in results/ named in its output"
