"""Target files (harness.plan.target): a bad one is one line naming the file, exit 2, and nothing starts (no run
folder, no process); a good one plans the deployment it declares, every address through `route`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.plan import config
from harness.plan.deploy_target import plan_target
from harness.plan.target import TargetError, experiment_for, load
from harness.runtime import leftovers
from tests.cli_runner import run_main

ROOT = Path(__file__).resolve().parents[1]
RUST = ROOT / "examples" / "foreign-rust" / "target.yaml"

GOOD = """\
name: toy
instances:
  - id: a
    role: slm
    command: [/bin/sleep, "60"]
    ports: {op: 9000, hb: 9001}
    peers: {b: [hb], w: [op]}
  - id: b
    role: slm
    command: [/bin/sleep, "60"]
    ports: {op: 9000, hb: 9001}
    peers: {a: [hb], w: [op]}
  - id: w
    role: worker
    command: [/bin/sleep, "60"]
    ports: {op: 9000}
entry: [a, b]
latency: {hb: 0.05}
"""


def variant(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# case -> (the file's text, what its one line must say)
BAD = {
    "unknown key": (GOOD + "colour: blue\n", "unknown key 'colour'"),
    "unknown instance key": (variant("    role: worker\n", "    role: worker\n    replicas: 2\n"),
                             "instances.2.replicas"),
    "missing ports": (variant("    ports: {op: 9000}\n", ""), "instances.2.ports: missing"),
    "empty ports": (variant("    ports: {op: 9000}\n", "    ports: {}\n"), "at least one port"),
    "peer not an instance": (variant("peers: {b: [hb], w: [op]}", "peers: {b: [hb], x: [op]}"),
                             "peer 'x' is not an instance"),
    "peer plane not served": (variant("peers: {b: [hb], w: [op]}", "peers: {b: [state], w: [op]}"),
                              "has no port for plane 'state'"),
    "entry not an instance": (variant("entry: [a, b]", "entry: [a, z]"), "entry: 'z' is not an instance"),
    "entry without op": (variant("entry: [a, b]", "entry: [a, b]\nclient: http").replace(
        "    ports: {op: 9000, hb: 9001}\n    peers: {b: [hb]",
        "    ports: {api: 9000, hb: 9001}\n    peers: {b: [hb]"), "has no 'op' port"),
    "two planes one port": (variant("ports: {op: 9000}", "ports: {op: 9000, x: 9000}"),
                            "each plane needs its own port"),
    "id twice": (variant("  - id: w\n", "  - id: a\n"), "id 'a' is given twice"),
    "bad id": (variant("  - id: w\n", "  - id: W!\n"), "instances.2.id"),
    "harness's name": (variant("  - id: w\n", "  - id: bss\n").replace("w: [op]", "bss: [op]"), "harness's own names"),
    "latency of no plane": (variant("latency: {hb: 0.05}", "latency: {state: 0.05}"),
                            "no instance has a plane 'state'"),
    "not a mapping": ("- a\n- b\n", "the top level must be a mapping"),
    "does not parse": ("name: [\n", "does not parse"),
    "duplicate key": (GOOD + "name: again\n", "duplicate key"),
    "bad client": (GOOD + "client: {python: 'not a class'}\n", "client"),
}


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "target.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_target_file_is_one_line_naming_it(case, write):
    text, fragment = BAD[case]
    path = write(text)
    with pytest.raises(TargetError) as err:
        load(path)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and fragment in line, line


def refused(argv: list[str], capsys, out: Path, fragment: str) -> None:
    """`harness run ARGV --out OUT` refused: one line with `fragment`, exit 2, no folder, nothing running."""
    before = {p.pid for p in leftovers.processes(session=leftovers.this_session())}
    proc = run_main(["run", *argv, "--out", str(out)], capsys)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not out.exists()
    assert {p.pid for p in leftovers.processes(session=leftovers.this_session())} <= before


# case -> (harness run's arguments after --target FILE, what its one line must say)
RUN_REFUSALS = {
    "worst on an uninstrumented target": (["--fault", "crash", "--fault-target", "a"],
                                          "fault_at worst reads the target's own events"),
    "task:K on an uninstrumented target": (["--fault", "crash", "--fault-target", "a", "--fault-at", "task:2"],
                                           "fault_at task:2 reads the target's own events"),
    "a white-box fault": (["--fault", "slm-crash", "--fault-at", "time:1"], "use --fault crash --fault-target"),
    "crash without a target": (["--fault", "crash", "--fault-at", "time:1"], "none given"),
    "an instance that is not there": (["--fault", "crash", "--fault-target", "q", "--fault-at", "time:1"],
                                      "'q' is not an instance"),
    "a role that is not there": (["--fault", "pause", "--fault-target", "role:vim", "--fault-at", "time:1"],
                                 "no instance has role 'vim'"),
    "the bus": (["--transport", "amqp"], "leave transport at http"),
    "swarm": (["--runtime", "swarm"], "local and docker runtimes"),
}


@pytest.mark.parametrize("case", list(RUN_REFUSALS))
def test_a_run_the_target_cannot_take_is_refused_before_anything_starts(case, write, tmp_path, capsys):
    argv, fragment = RUN_REFUSALS[case]
    refused(["--target", str(write(GOOD)), *argv], capsys, tmp_path / "out", fragment)


def test_a_command_that_does_not_exist_is_refused_before_anything_starts(write, tmp_path, capsys):
    path = write(variant("command: [/bin/sleep, \"60\"]\n    ports: {op: 9000}",
                         "command: [bin/no-such-program]\n    ports: {op: 9000}"))
    refused(["--target", str(path)], capsys, tmp_path / "out", "command 'bin/no-such-program' does not exist")


def test_a_docker_run_needs_an_image_for_every_instance(write, tmp_path, capsys):
    refused(["--target", str(write(GOOD)), "--runtime", "docker"], capsys, tmp_path / "out", "has no image")


def test_a_missing_target_file_is_one_line(tmp_path, capsys):
    refused(["--target", str(tmp_path / "nope.yaml")], capsys, tmp_path / "out", "nope.yaml")


def test_the_deployment_is_what_the_file_declares(write):
    z, target = experiment_for(config.build({"target": str(write(GOOD))}))
    assert target is not None and z.time_scale == 1.0  # a foreign orchestrator's seconds are its own
    hosts: dict[str, str] = {}
    deployment = plan_target(target, z, "run1", lambda s: hosts.setdefault(s, f"127.9.9.{len(hosts) + 1}"),
                             "127.9.9.200:1", None, lambda link: f"proxy-of-{link.name}")
    links = {link.name: link for link in deployment.links}
    assert set(links) == {"a>b:hb", "a>w:op", "b>a:hb", "b>w:op", "bss>a:op", "bss>a:hb", "bss>b:op", "bss>b:hb"}
    assert links["a>b:hb"].target == f"{hosts['b']}:9001" and links["a>b:hb"].delay_fwd == 0.05
    assert links["a>w:op"].delay_fwd == 0.0
    a = deployment.service("a")
    assert a.peers == {"b": {"hb": "proxy-of-a>b:hb"}, "w": {"op": "proxy-of-a>w:op"}}
    assert a.collector is None and a.bind == hosts["a"] and a.ports == {"op": 9000, "hb": 9001}
    assert deployment.entry == ["proxy-of-bss>a:op", "proxy-of-bss>b:op"]
    assert deployment.roles == {"a": "slm", "b": "slm", "w": "worker"}
    assert target.select(["role:slm", "a", "w"]) == ["a", "b", "w"]


def test_the_target_files_own_z_fills_what_the_run_did_not_give(write):
    path = write(GOOD + "z: {h_r: 10, time_scale: 0.5, requests: 7}\n")
    z, _ = experiment_for(config.build({"target": str(path), "requests": 3}))
    assert (z.h_r, z.t_h, z.time_scale, z.requests) == (10, 0.3, 0.5, 3)  # t_h follows the target's h_r


def test_the_examples_are_valid_target_files():
    for path in sorted((ROOT / "examples").glob("*/target.yaml")):
        target = load(path)
        assert target.instances and target.entry, path
    assert load(RUST).instrumented is False


def test_a_black_box_t_r_is_infinite_while_a_touched_workflow_never_completed():
    """From outside, t_r is the slowest workflow in flight at the fault; one that never completed (Tacker's
    operation stuck PROCESSING after its conductor died) has not recovered: t_r is inf, not the survivors'."""
    import math

    from harness.measure import blackbox

    def ev(t: float, svc: str, kind: str, **fields: object) -> dict[str, object]:
        return {"t": t, "wall": 1.7e9 + t, "svc": svc, "kind": kind, **fields}

    base = [ev(0.0, "bss", "submitted", req="clean", to="api"), ev(1.0, "bss", "completed", req="clean", by="api", n=1),
            ev(2.0, "bss", "submitted", req="slow", to="api"),
            ev(2.5, "harness", "fault", fault="crash", action="kill", target="conductor-1"),
            ev(6.0, "bss", "completed", req="slow", by="api", n=1)]
    recovered = blackbox.times(base, time_scale=1.0)
    assert (recovered["t_c"], recovered["t_r"], recovered["touched"]) == (1.0, 4.0, 1)
    submitted = ev(2.1, "bss", "submitted", req="stuck", to="api")
    stuck = blackbox.times([*base, submitted, ev(20.0, "bss", "indeterminate", req="stuck", state="PROCESSING")], 1.0)
    assert math.isinf(stuck["t_r"]) and stuck["touched"] == 2, stuck
    done = blackbox.times([*base, submitted, ev(9.0, "bss", "completed", req="stuck", by="api", n=1)], 1.0)
    assert done["t_r"] == 9.0 - 2.1, done
