"""Bounds for every experiment parameter, ASCII digits, duplicate keys and the run caps, all before anything starts.

Each bad value goes through the real command line (`harness model` or `harness run`, harness.cli.commands.main
in process: the same path from argv to exit code as `python -m harness`, without a start-up per case) and must
end as one line on stderr naming the key, exit code 2, nothing on stdout. For `harness run` also: no process
started, no run folder made (neither --out nor results/). Edges come from harness.plan.bounds itself, so every
bound is tried at the bound (accepted) and just beyond (refused), and docs/parameters.md is held to the module.
Nothing here starts a deployment.
"""

from __future__ import annotations

import math
import subprocess
import typing
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.errors import ConfigError, UserError
from harness.experiment import run as runner
from harness.experiment import sweep
from harness.plan import bounds, capacity, config
from harness.plan.bounds import BOUNDS, CAPS
from tests.cli_runner import run_main

ROOT = Path(__file__).resolve().parents[1]

FILES = {
    "dup.yaml": "n: 4\nh_r: 2\nn: 5\n",
    "dup-nested.yaml": "n: 2\nt_i: [1, 2]\nh_r: 2\nh_r: 3\n",
    "dup.toml": "n = 4\nh_r = 2\nn = 5\n",
    "dup-quoted.toml": 'h_r = 2\n"n" = 3\nn = 4\n',
    "arabic.yaml": "n: '٣'\n",
    "fullwidth.yaml": "t_o: '０.１５'\n",
    "bool.yaml": "h_r: yes\n",
    "inf.toml": "h_r = inf\n",
    "big.toml": "t_h = 1e308\n",
    "merge.yaml": "n: 3\nt_i: &tasks [1, 2, 3]\nl_a: *tasks\n",
}

# id: (argv, fragments the one stderr line must hold: the key, and the rule)
MODEL_BAD: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "h_r=1e-320": (("--set", "h_r=1e-320"), ("h_r:", "0.001")),
    "h_r-below": (("--set", "h_r=0.0009"), ("h_r:", "greater than or equal to 0.001")),
    "h_r-above": (("--set", "h_r=1.5e6"), ("h_r:", "less than or equal to 1000000")),
    "h_r-inf": (("--set", "h_r=.inf"), ("h_r:",)),
    "h_r-nan": (("--set", "h_r=.nan"), ("h_r:",)),
    "h_r-true": (("--set", "h_r=true"), ("h_r:", "not true")),
    "h_r-on": (("--set", "h_r=on"), ("h_r:", "not true")),
    "h_r-underscore-text": (("--set", 'h_r="1_0"'), ("h_r:", "valid number")),
    "h_r-hex-text": (("--set", 'h_r="0x10"'), ("h_r:", "valid number")),
    "time_scale=1e300": (("--set", "time_scale=1e300"), ("time_scale:", "less than or equal to 100")),
    "time_scale-below": (("--set", "time_scale=0.0009"), ("time_scale:", "0.001")),
    "t_h=1e308": (("--set", "t_h=1e308"), ("t_h:", "less than or equal to 3600")),
    "t_h-above": (("--set", "t_h=3600.5"), ("t_h:", "3600")),
    "t_h_mult-above": (("--set", "t_h_mult=1001"), ("t_h_mult:", "1000")),
    "t_h-derived": (("--set", "h_r=0.001", "--set", "t_h_mult=4"), ("t_h:", "3600", "t_h_mult / h_r")),
    "k=1e12-int": (("--set", "k=1000000000000"), ("k:", "less than or equal to 100")),
    "k=1e12-text": (("--set", "k=1e12"), ("k:", "valid integer")),
    "k-above": (("--set", "k=101"), ("k:", "100")),
    "n=100000": (("--set", "n=100000"), ("n:", "less than or equal to 1000")),
    "n-true": (("--set", "n=true"), ("n:",)),
    "t_i-above": (("--set", "t_i=3601"), ("t_i:", "3600")),
    "t_i-list-above": (("--set", "t_i=1,2,3,4,5,3601"), ("t_i:", "3600")),
    "t_i-list-inf": (("--set", "t_i=1,2,3,4,5,.inf"), ("t_i:", "valid number")),
    "t_i-list-bool": (("--set", "t_i=1,2,3,4,5,true"), ("t_i:", "not true")),
    "t_m-above": (("--set", "t_m=1e7"), ("t_m:", "3600000")),
    "t_m-per-task": (("--set", "t_m=30000"), ("t_m:", "t_m / n", "5000")),
    "t_o-above": (("--set", "t_o=3601"), ("t_o:", "3600")),
    "l_a-above": (("--set", "l_a=61"), ("l_a:", "60")),
    "l_b-list": (("--set", "l_b=0.05,0.05,0.05,0.05,0.05,61"), ("l_b:", "60")),
    "l-above": (("--design", "distributed", "--set", "l=1e9"), ("l:", "60")),
    "l_hb-above": (("--set", "l_hb=61"), ("l_hb:", "60")),
    "s_p-above": (("--set", "s_p=1001"), ("s_p:", "1000")),
    "s_o-above": (("--set", "s_o=1001"), ("s_o:", "1000")),
    "h_s-above": (("--set", "h_s=10001"), ("h_s:", "10000")),
    "h_m-above": (("--set", "h_m=2e6"), ("h_m:", "1000000")),
    "s_z-above": (("--set", "s_z=1e6"), ("s_z:", "100000")),
    "P_a-above": (("--set", "P_a=1e6"), ("P_a:", "100000")),
    "P_b-negative": (("--set", "P_b=-1"), ("P_b:", ">= 0")),
    "P-above": (("--design", "distributed", "--set", "P=100001"), ("P:", "100000")),
    "p_c-above": (("--set", "p_c=1e6"), ("p_c:", "100000")),
    "t_bus-above": (("--set", "t_bus=61"), ("t_bus:", "60")),
    "amqp_frame-above": (("--set", "amqp_frame=1e5"), ("amqp_frame:", "10000")),
    "fault_for-above": (("--set", "fault_for=3601"), ("fault_for:", "3600")),
    "spike-above": (("--set", "spike=61"), ("spike:", "60")),
    "requests-above": (("--set", "requests=100001"), ("requests:", "100000")),
    "users-above": (("--set", "users=1001"), ("users:", "1000")),
    "users-float": (("--set", "users=2.0"), ("users:", "valid integer")),
    "rate-above": (("--set", "rate=1001"), ("rate:", "1000")),
    "rate-zero": (("--set", "rate=0"), ("rate:", "greater than 0")),
    "warmup-above": (("--set", "warmup=100001"), ("warmup:", "100000")),
    "seed-negative": (("--set", "seed=-1"), ("seed:", "greater than or equal to 0")),
    "seed-above": (("--set", "seed=9223372036854775808"), ("seed:", "less than or equal to")),
    "seed-float": (("--set", "seed=1.5"), ("seed:", "valid integer")),
    "worker_replicas-above": (("--set", "worker_replicas=3"), ("worker_replicas:", "2")),
    "container_cpus-zero": (("--set", "container_cpus=0"), ("container_cpus:", "greater than 0")),
    "container_memory-below": (("--set", "container_memory=5m"), ("container_memory:", "6m")),
    "container_memory-above": (("--set", "container_memory=2000g"), ("container_memory:", "1024g")),
    "alpha-above": (("--set", "alpha=1e7"), ("alpha:", "1000000")),
    "beta-negative": (("--set", "beta=-1"), ("beta:", "greater than or equal to 0")),
    "gamma-above": (("--set", "gamma=1e7"), ("gamma:", "1000000")),
    "delta-above": (("--set", "delta=1e7"), ("delta:", "1000000")),
    # numbers in fault_at: ASCII digits, inside their bounds
    "task-arabic": (("--set", "fault_at=task:١"), ("fault_at:", "ASCII digits", "ARABIC-INDIC")),
    "task-fullwidth": (("--set", "fault_at=task:１"), ("fault_at:", "ASCII digits", "FULLWIDTH")),
    "task-devanagari-K": (("--set", "fault_at=task:२"), ("fault_at:", "ASCII digits")),
    "phase-arabic": (("--set", "fault_at=task:2@٠.5"), ("fault_at:", "ASCII digits")),
    "time-arabic": (("--set", "fault_at=time:١٠"), ("fault_at:", "ASCII digits")),
    "time-superscript": (("--set", "fault_at=time:1²"), ("fault_at:", "ASCII digits")),
    "time-inf": (("--set", "fault_at=time:inf"), ("fault_at:", "time:T", "36000")),
    "time-nan": (("--set", "fault_at=time:nan"), ("fault_at:", "time:T")),
    "time-underscore": (("--set", "fault_at=time:1_0"), ("fault_at:", "time:T")),
    "time-above": (("--set", "fault_at=time:36000.5"), ("fault_at:", "36000")),
    "time-1e9": (("--set", "fault_at=time:1e9"), ("fault_at:", "36000")),
    "task-above-n": (("--set", "fault_at=task:7"), ("fault_at:", "n=6")),
    "task-zero": (("--set", "fault_at=task:0"), ("fault_at:", "1 <= K")),
    "task-space": (("--set", "fault_at=task: 1"), ("fault_at:", "valid string")),  # YAML: a mapping
    "phase-one": (("--set", "fault_at=task:1@1"), ("fault_at:", "0 <= F < 1")),
    "phase-inf": (("--set", "fault_at=task:1@inf"), ("fault_at:", "0 <= F < 1")),
    # any number as text
    "n-arabic": (("--set", "n=٣"), ("n:", "ASCII digits")),
    "n-fullwidth": (("--set", "n=１"), ("n:", "ASCII digits", "FULLWIDTH")),
    "t_i-arabic": (("--set", "t_i=٢.٥"), ("t_i:", "ASCII digits")),
    "t_i-list-arabic": (("--set", "t_i=1,2,3,4,5,٦"), ("t_i:", "ASCII digits")),
    "requests-devanagari": (("--set", "requests=२०"), ("requests:", "ASCII digits")),
    "s_z-fraction": (("--set", "s_z=½"), ("s_z:", "ASCII digits")),
    "h_r-roman": (("--set", "h_r=Ⅻ"), ("h_r:", "ASCII digits")),
    "container_memory-fullwidth": (("--set", "container_memory=２56m"), ("container_memory:", "ASCII digits")),
    # files
    "yaml-duplicate": (("--config", "{d}/dup.yaml"), ("dup.yaml", "duplicate key 'n'", "line 3")),
    "yaml-duplicate-late": (("--config", "{d}/dup-nested.yaml"), ("dup-nested.yaml", "duplicate key 'h_r'")),
    "toml-duplicate": (("--config", "{d}/dup.toml"), ("dup.toml", "duplicate key 'n'", "line 3")),
    "toml-duplicate-quoted": (("--config", "{d}/dup-quoted.toml"), ("dup-quoted.toml", "duplicate key 'n'")),
    "yaml-arabic": (("--config", "{d}/arabic.yaml"), ("n:", "ASCII digits")),
    "yaml-fullwidth": (("--config", "{d}/fullwidth.yaml"), ("t_o:", "ASCII digits")),
    "yaml-bool": (("--config", "{d}/bool.yaml"), ("h_r:", "not true")),
    "toml-inf": (("--config", "{d}/inf.toml"), ("h_r:",)),
    "toml-big": (("--config", "{d}/big.toml"), ("t_h:", "3600")),
}

# `harness run`: the bounds, and the caps of one run on this machine (harness.plan.capacity).
RUN_BAD: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "run-h_r=1e-320": (("--set", "h_r=1e-320"), ("h_r:", "0.001")),
    "run-time_scale=1e300": (("--set", "time_scale=1e300"), ("time_scale:",)),
    "run-t_h=1e308": (("--set", "t_h=1e308"), ("t_h:",)),
    "run-k=1e12": (("--set", "k=1000000000000"), ("k:",)),
    "run-n=100000": (("--set", "n=100000"), ("n:",)),
    "run-task-arabic": (("--fault", "slm-crash", "--fault-at", "task:١"), ("fault_at:", "ASCII digits")),
    "run-time-fullwidth": (("--fault", "slm-crash", "--fault-at", "time:１"), ("fault_at:", "ASCII digits")),
    "run-yaml-duplicate": (("--config", "{d}/dup.yaml"), ("duplicate key 'n'",)),
    "run-users-zero": (("--users", "0"), ("users:",)),
    "run-services": (("--fault", "worker-crash", "--set", "n=40"), ("n, k:", "82 services", "64")),
    "run-services-distributed": (("--design", "distributed", "--set", "n=33"), ("n, k:", "66 services")),
    "run-links": (("--set", "k=22"), ("n, k:", "links", "1000")),
    "run-heartbeats": (("--set", "h_r=1000"), ("h_r:", "heartbeats a wall second", "2000")),
    "run-heartbeats-scale": (("--design", "distributed", "--set", "time_scale=0.001"), ("h_r:", "heartbeats")),
    "run-message": (("--set", "s_z=20000"), ("s_z:", "16000 kB")),
    "run-message-list": (("--set", "P_a=1,1,1,1,1,16001"), ("P_a:", "16000 kB")),
    "run-requests": (("--requests", "100000"), ("requests", "3600 s")),
    "run-time_scale": (("--set", "time_scale=100"), ("time_scale", "3600 s")),
    "run-slow-tasks": (("--set", "t_i=3600"), ("requests", "wall seconds")),
    "run-time-fault": (("--fault", "slm-crash", "--fault-at", "time:30000"), ("time:30000", "3600 s")),
    "run-open-loop": (("--rate", "0.001"), ("rate 0.001", "3600 s")),
    "run-every": (("--fault", "slm-crash", "--fault-at", "every"), ("fault_at:", "every", "sweep")),
}


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bounds")
    for name, text in FILES.items():
        (d / name).write_text(text, encoding="utf-8")
    return d


@pytest.fixture
def harness(cfg_dir, capsys):
    """`harness ARGV` in process, as a CompletedProcess; an escaping exception becomes a traceback."""

    def run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return run_main([a.replace("{d}", str(cfg_dir)) for a in args], capsys)

    return run


def assert_one_line(proc: subprocess.CompletedProcess[str], fragments: tuple[str, ...]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("harness: config error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("case", list(MODEL_BAD))
def test_model_refuses_out_of_bounds(harness, case):
    args, fragments = MODEL_BAD[case]
    assert_one_line(harness(("model", *args)), fragments)


@pytest.mark.parametrize("case", list(RUN_BAD))
def test_run_refuses_before_anything_starts(harness, case, tmp_path, monkeypatch):
    """One line, and nothing else: no header (the header goes to stderr too), no process, no folder."""
    monkeypatch.chdir(tmp_path)

    def started(*_: object, **__: object) -> None:  # a safety net: should a refusal regress, fail, start nothing
        raise AssertionError("harness run went on to start the experiment")

    monkeypatch.setattr(runner, "experiment", started)
    out = tmp_path / "run-out"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    args, fragments = RUN_BAD[case]
    proc = harness(("run", *args, "--out", str(out)))
    assert_one_line(proc, fragments)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no results/ either
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_there_are_at_least_fifty_bad_cases():
    assert len(MODEL_BAD) + len(RUN_BAD) >= 50


# --- every bound at its edge ----------------------------------------------------------------------------

FIELD_BOUNDS = [k for k in BOUNDS if k not in bounds.FAULT_AT_BOUNDS]
COMPANIONS: dict[str, dict[str, Any]] = {  # what another rule needs for a key's edge to be reachable
    "t_m": {"n": 1000},
    "s_o": {"n": 1000},
    "t_h": {"h_r": 1e6},
}
LOWEST_ACCEPTED = {"t_h_mult": 3.0, "t_h": 3e-6}  # t_h >= 3 / h_r, the paper's rule, above the bound's open 0


def _value(key: str, x: float) -> Any:
    if key == "container_memory":
        return f"{int(x)}b"
    return int(x) if BOUNDS[key].integer else x


def _beyond(key: str, side: str) -> float:
    b = BOUNDS[key]
    edge = b.low if side == "low" else b.high
    if b.integer or key == "container_memory":
        return edge - 1 if side == "low" else edge + 1
    return math.nextafter(edge, -math.inf if side == "low" else math.inf)


def _build(key: str, x: float) -> config.Experiment:
    return config.build({**COMPANIONS.get(key, {}), key: _value(key, x)})


@pytest.mark.parametrize("key", FIELD_BOUNDS)
def test_each_bound_admits_its_edges(key):
    b = BOUNDS[key]
    low = LOWEST_ACCEPTED.get(key, math.nextafter(b.low, math.inf) if b.open_low else b.low)
    for x in (low, b.high):
        z = _build(key, x)
        got = getattr(z, key)
        assert (got == _value(key, x)) if key != "t_m" else z.t_i == pytest.approx(x / 1000)


@pytest.mark.parametrize("key", FIELD_BOUNDS)
@pytest.mark.parametrize("side", ["low", "high"])
def test_each_bound_refuses_just_beyond(key, side):
    b = BOUNDS[key]
    x = b.low if side == "low" and b.open_low else _beyond(key, side)
    with pytest.raises(ConfigError, match=rf"^config error: {key}: "):
        _build(key, x)


@pytest.mark.parametrize(("fault_at", "ok"), [
    ("task:1", True), ("task:6", True), ("task:7", False), ("task:0", False), ("task:01", True),
    ("task:3@0", True), ("task:3@0.999", True), ("task:3@.5", True), ("task:3@1", False), ("task:3@-0.1", False),
    ("time:0", True), ("time:36000", True), ("time:36000.001", False), ("time:-1", False), ("time:1e3", True),
    ("time:3.5e4", True), ("time:", False), ("task:", False), ("worst", True), ("every", True),
])
def test_fault_at_numbers(fault_at, ok):
    if ok:
        z = config.build({"fault_at": fault_at})
        assert z.fault_at == fault_at
    else:
        with pytest.raises(ConfigError, match=r"^config error: fault_at: "):
            config.build({"fault_at": fault_at})


def test_derived_values_are_held_to_the_bounds_of_what_they_give():
    assert config.build({"h_r": 0.001}).t_h == 3000  # the default 3 / h_r, inside t_h's bound
    assert config.build({"t_m": 3600 * 6}).t_i == 3600
    with pytest.raises(ConfigError, match=r"t_m: gives t_i = t_m / n = 3600\.17"):
        config.build({"t_m": 3600 * 6 + 1})
    assert config.build({"h_r": 1, "t_h_mult": 1000}).t_h == 1000
    with pytest.raises(ConfigError, match=r"^config error: t_h: .*t_h_mult / h_r = 1000 / 0.1"):
        config.build({"h_r": 0.1, "t_h_mult": 1000})


# --- what stays accepted ----------------------------------------------------------------------------------

GOOD_SETS = [
    ["h_r=1e6", "t_h_mult=3"],  # the model's h_r -> infinity (tests/test_model_findings.py)
    ["n=1000", "t_m=120"], ["k=100"], ["time_scale=0.001"], ["time_scale=100"],
    ["t_o=0", "l_a=0", "l_b=0", "l_hb=0"], ["seed=0"], ["seed=9223372036854775807"],
    ["h_r=\"2.5\""], ["t_h=1e1"], ["container_memory=6m"], ["container_memory=1024g"],
    ["fault_at=task:6@0.5"], ["t_i=1,2,3,4,5,3600"], ["alpha=1e6", "beta=0"],
]


@pytest.mark.parametrize("sets", GOOD_SETS, ids=[",".join(s) for s in GOOD_SETS])
def test_good_edge_values_pass_harness_model(harness, sets):
    proc = harness(("model", *[a for s in sets for a in ("--set", s)], "--format", "json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("[")


def test_yaml_merge_keys_are_no_duplicates(harness, cfg_dir):
    z = config.load(cfg_dir / "merge.yaml")
    assert z.t_i == z.l_a == [1, 2, 3]
    assert config.safe_load_unique("a: &b {n: 3}\nb:\n  <<: *b\n  n: 4\n") == {"a": {"n": 3}, "b": {"n": 4}}
    with pytest.raises(config.DuplicateKeyError, match="duplicate key 'z'"):
        config.safe_load_unique("a: [1, {z: 1, z: 2}]\n")


def test_shipped_experiments_and_defaults_validate_and_fit_a_run():
    """The default z, experiments/example.yaml and every point of every shipped sweep spec are inside the
    bounds and the caps: the longest comes to minutes, not the hour of the cap."""
    longest = 0.0
    zs = [config.build({}), config.load(ROOT / "experiments" / "example.yaml")]
    for spec in sorted((ROOT / "experiments").glob("fig*.yaml")):
        zs += [p.z for p in sweep.plan(sweep.read_spec(spec)).points]
    assert len(zs) > 80
    for z in zs:
        capacity.check_run(z)
        longest = max(longest, capacity.modelled_duration(z)[0])
    assert 30 < longest < 600


# --- the caps at their edges ------------------------------------------------------------------------------


def _refused(**data: Any) -> str:
    with pytest.raises(ConfigError) as err:
        capacity.check_run(config.build(data))
    return str(err.value)


def test_services_cap_edge():
    assert capacity.services_and_links(config.build({"n": 31, "fault": "worker-crash"}))[0] == 64
    capacity.check_run(config.build({"n": 31, "fault": "worker-crash"}))
    assert "66 services" in _refused(n=32, fault="worker-crash")
    capacity.check_run(config.build({"design": "distributed", "n": 32}))
    assert "66 services" in _refused(design="distributed", n=33)


def test_links_cap_edge():
    z = config.build({"k": 21, "time_scale": 1})  # at 0.2, 21 SLMs would heartbeat 4200 times a second
    assert capacity.services_and_links(z)[1] == 21 * 20 * 2 + 21 * 6
    capacity.check_run(z)
    assert "1056 links" in _refused(k=22, time_scale=1)


def test_heartbeat_cap_edge():
    z = config.build({"h_r": 250, "time_scale": 0.25})
    assert capacity.heartbeats_per_second(z) == 2000
    capacity.check_run(z)
    assert "heartbeats a wall second" in _refused(h_r=250.5, time_scale=0.25)


def test_message_cap_edge():
    capacity.check_run(config.build({"s_z": 16000}))
    assert _refused(s_z=16000.5).startswith("config error: s_z: ")
    assert _refused(design="distributed", P=[1, 1, 1, 1, 1, 16001]).startswith("config error: P: ")


def test_duration_cap_edge():
    """The most requests that fit in the hour pass; one round more is refused."""
    z = config.build({})
    per_round = capacity.modelled_duration(config.build({"requests": 12}))[0] - capacity.modelled_duration(
        config.build({"requests": 8}))[0]
    assert per_round == pytest.approx(model_t_c(z) * z.time_scale)
    fits = max(r for r in range(4, 100_000, 4) if capacity.modelled_duration(config.build({"requests": r}))[0]
               <= CAPS["duration"].value)
    capacity.check_run(config.build({"requests": fits}))
    assert "3600 s one run may last" in _refused(requests=fits + 1)


def model_t_c(z: config.Experiment) -> float:
    from harness import model

    return model.evaluate(z).t_c


# --- the document -----------------------------------------------------------------------------------------


def test_docs_table_is_the_module():
    text = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    table = text.split("<!-- bounds:begin -->\n", 1)[1].split("<!-- bounds:end -->", 1)[0]
    assert table == bounds.markdown(), "docs/parameters.md: regenerate with `python -m harness.plan.bounds`"
    for key in BOUNDS:
        assert f"| `{key}` | {bounds.interval(key)} |" in table


def _numeric(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    return any(_numeric(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def test_every_number_of_an_experiment_has_a_bound():
    """A numeric field added without a bound fails here, and so does a bound of a field that went away."""
    fields = config.Experiment.model_fields
    numeric = {k for k, f in fields.items() if _numeric(f.annotation)}
    assert "n" in numeric and "h_r" in numeric and "design" not in numeric
    assert numeric | {"container_memory"} == set(FIELD_BOUNDS)


# --- numbers typed as options (harness.cli.params, for --requests, --users, --seed, --rate, --top, ...) -------


@pytest.mark.parametrize(("kind", "text", "ok"), [
    ("int", "10", True), ("int", "-2", True), ("int", "١٠", False), ("int", "１", False), ("int", "1.0", False),
    ("int", "²", False), ("float", "1.5", True), ("float", "2e3", True), ("float", "inf", False),
    ("float", "nan", False), ("float", "١.٥", False), ("float", "1_0", False), ("top", "0", False), ("top", "3", True),
])
def test_option_types_take_ascii_digits_only(kind, text, ok):
    import click
    from click.testing import CliRunner

    from harness.cli.params import ASCII_FLOAT, ASCII_INT, AsciiInt

    kinds = {"int": ASCII_INT, "float": ASCII_FLOAT, "top": AsciiInt(min=1)}

    @click.command()
    @click.option("--value", type=kinds[kind], required=True)
    def show(value: float) -> None:
        click.echo(repr(value))

    result = CliRunner().invoke(show, ["--value", text])
    assert (result.exit_code == 0) is ok, result.output
    if ok:
        assert float(result.output) == float(text)
    else:
        assert result.exit_code == 2 and "Invalid value for '--value'" in result.output


@pytest.mark.parametrize(("grid", "fragment"), [
    ({"n": [2, "٣"]}, "n: numbers take ASCII digits"),
    ({"h_r": [1, 1e-320]}, "h_r: Input should be greater than or equal to 0.001"),
    ({"fault_at": ["task:1", "task:１"]}, "fault_at: numbers take ASCII digits"),
    ({"k": [2, 101]}, "k: Input should be less than or equal to 100"),
])
def test_sweep_grids_go_through_the_same_bounds(grid, fragment):
    with pytest.raises(UserError, match=r"^sweep spec: point 2 ") as err:
        sweep.plan({"base": {"n": 3, "fault": "slm-crash"}, "grid": grid})
    assert fragment in str(err.value)
