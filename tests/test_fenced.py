"""The fenced mechanism (issue 22, docs/fencing.md): the epoch rules as pure functions, and real runs where a
paused or crashed owner is replaced without a workflow driven twice, beside the paper's mechanism that is not."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.plan import config
from harness.runtime.broker import SERVER
from protocol.events import KINDS
from protocol.messages import ROUTES, fenced_refusal
from targets.fencing import LEASE_MARGIN, Lease, Promise, confirms, grants, lease_start, majority

# --- the rules, pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,need", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_a_majority_of_k_is_more_than_half(k, need):
    assert majority(k) == need
    assert 2 * majority(k) > k, "two majorities always share a member"


def test_a_voter_grants_one_candidate_per_epoch_and_only_above_its_promise():
    dead_owner = Promise(1, "slm-a")
    assert grants(dead_owner, 2, "slm-b", owner_dead=True)
    assert not grants(dead_owner, 1, "slm-b", owner_dead=True), "not the epoch already promised"
    promised = Promise(2, "slm-b")
    assert not grants(promised, 2, "slm-c", owner_dead=True), "one candidate per epoch"
    assert grants(promised, 3, "slm-c", owner_dead=True)


def test_a_voter_that_still_hears_the_owner_grants_nobody_else():
    alive_owner = Promise(1, "slm-a")
    assert not grants(alive_owner, 2, "slm-b", owner_dead=False), "the owner's lease rests on this refusal"
    assert grants(Promise(2, "slm-b"), 3, "slm-b", owner_dead=False), "a candidate may raise its own epoch"


def test_an_owner_is_confirmed_only_while_no_later_epoch_was_promised():
    assert confirms(Promise(1, "slm-a"), 1, "slm-a")
    assert confirms(Promise(1, "slm-a"), 2, "slm-b"), "a voter that missed the vote learns the new epoch"
    assert not confirms(Promise(2, "slm-b"), 1, "slm-a"), "a paused owner that resumes is stale"
    assert not confirms(Promise(2, "slm-b"), 2, "slm-c"), "the same epoch, someone else's"


def test_the_lease_starts_at_the_latest_heartbeat_a_majority_acknowledged():
    assert lease_start({}, 3) is None
    assert lease_start({"b": 5.0}, 3) == 5.0, "k = 3: the owner and one peer"
    assert lease_start({"b": 5.0, "c": 7.0}, 3) == 7.0
    assert lease_start({"b": 5.0, "c": 7.0}, 5) == 5.0, "k = 5: the owner and two peers"
    assert lease_start({"b": 5.0}, 5) is None


def test_a_lease_that_lapsed_starts_a_new_era_and_an_unbroken_one_does_not():
    async def scenario() -> None:
        lease = Lease(k=3, t_h=1.0)
        now = time.monotonic()
        assert not lease.valid()
        lease.acked("b", now)
        assert lease.valid() and lease.era == 1
        assert lease.expires == pytest.approx(now + 1.0 * (1 - LEASE_MARGIN))
        lease.acked("b", now + 0.5)  # renewed before it ran out: the same stretch
        assert lease.era == 1
        lease.acked("c", now + 0.2)  # older than what b gave: nothing changes
        assert lease.expires == pytest.approx(now + 0.5 + 1.0 * (1 - LEASE_MARGIN))
        lease.acked("b", now + 5.0)  # a gap (a pause): the owner must confirm its epochs again
        assert lease.era == 2

    asyncio.run(scenario())


def test_the_bss_refuses_a_stale_epoch_and_a_second_completion():
    assert fenced_refusal(0, 1, completed=False) is None
    assert fenced_refusal(2, 1, completed=False) == "stale"
    assert fenced_refusal(1, 2, completed=True) == "already"
    assert fenced_refusal(2, 2, completed=False) is None


def test_every_fenced_event_and_message_is_documented():
    for kind in ("task_call", "task_start", "task_end", "task_reply", "takeover", "request_completed", "completed"):
        assert "epoch?" in KINDS[kind].fields, kind
    for kind in ("vote_asked", "vote_granted", "epoch_check", "stepped_down", "task_fenced", "completion_refused"):
        assert "epoch" in KINDS[kind].fields, kind
    assert {"/vote", "/confirm"} <= {r.path for r in ROUTES}


@pytest.mark.parametrize("sets,message", [
    ({"mechanism": "fenced"}, "k: fenced needs k >= 3"),
    ({"mechanism": "fenced", "design": "monolith"}, "fenced is a mechanism of the centralised and distributed"),
])
def test_fenced_where_it_cannot_work_is_refused_in_one_line(sets, message):
    with pytest.raises(ConfigError) as err:
        config.build(sets)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert config.build({"mechanism": "fenced", "k": 3}).k == 3


def test_the_fenced_model_adds_the_election_to_t_l_and_only_what_exceeds_t_o_to_t_c():
    from harness import model

    paper = model.evaluate(config.build({"k": 3}))
    fenced = model.evaluate(config.build({"k": 3, "mechanism": "fenced"}))
    assert fenced.t_c == pytest.approx(paper.t_c), "2 l_hb = 0.1 s hides in t_o = 0.15 s"
    assert fenced.t_l == pytest.approx(paper.t_l + 2 * 0.05)
    assert fenced.B_rel == pytest.approx(paper.B_rel + 2 * 0.1 / paper.t_c)
    slow = {"k": 5, "l_hb": 0.2}
    paper, fenced = model.evaluate(config.build(slow)), model.evaluate(config.build({**slow, "mechanism": "fenced"}))
    assert fenced.t_c == pytest.approx(paper.t_c + 0.4 - 0.15)
    assert fenced.t_r == pytest.approx(paper.t_r + 0.4 - 0.15 + 0.4)


def test_the_fencing_sweep_plans_every_mechanism_under_every_fault_of_the_issue():
    from harness.experiment.sweep.spec import plan, read_spec

    points = plan(read_spec(Path(__file__).parent.parent / "experiments" / "fencing.yaml")).points
    assert len(points) == 3 * 8 + 2 * 8, "centralised: 3 mechanisms x 8 (fault, transport); distributed: 2 x 8"


# --- real runs --------------------------------------------------------------------------------------------

FAST = ("--set", "k=3", "--set", "n=4", "--set", "t_i=2", "--set", "requests=6", "--set", "users=3")


def _run(out: Path, mechanism: str, fault: str, *more: str, load: str = "builtin",
         design: str = "centralised") -> dict[str, str]:
    """One real run (k = 3 is read by the centralised design only), its summary.csv row."""
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--load", load,
                           "--design", design, "--mechanism", mechanism, "--fault", fault, *FAST, *more],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (out / "summary.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    return row


def _kinds(out: Path, kind: str) -> list[dict]:
    import json

    with (out / "events.jsonl").open() as fh:
        return [e for e in map(json.loads, fh) if e["kind"] == kind]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["slm-crash", "slm-pause"])
def test_fenced_takes_over_without_driving_a_workflow_twice(tmp_path, fault):
    row = _run(tmp_path / fault, "fenced", fault, "--fault-at", "worst")
    takeovers_without_a_second_driver(tmp_path / fault, row, fault)


def takeovers_without_a_second_driver(out: Path, row: dict[str, str], fault: str) -> list[dict]:
    """What a fenced run under slm-crash or slm-pause at the worst moment must show (both designs): every
    workflow once, no anomaly, each takeover a later epoch; the crash's t_r within 10% of the fenced model (the
    issue's bound); the paused owner stepped down. The takeovers, for the caller's own checks."""
    assert row["completed"] == row["requests"] == "6"
    assert (row["lost"], row["duplicated"], row["concurrent_owners"], row["double_effects"]) == ("0", "0", "0", "0")
    assert row["verdict"] == "pass", row["verdict_reason"]
    takeovers = _kinds(out, "takeover")
    assert takeovers and all(e["epoch"] >= 2 for e in takeovers), "a takeover wins a later epoch"
    if fault == "slm-crash":  # issue 22: a crash at the worst moment recovers within 10% of the fenced model's t_r
        assert abs(float(row["t_r_measured"]) / float(row["t_r_model"]) - 1) <= 0.10, (row["t_r_measured"],
                                                                                       row["t_r_model"])
    if fault == "slm-pause":  # the paused owner resumed: it learnt of the later epoch and stopped
        stepped = _kinds(out, "stepped_down")
        assert {e["req"] for e in takeovers} <= {e["req"] for e in stepped}
    return takeovers


@pytest.mark.slow
def test_the_locust_bss_is_a_fenced_resource_too(tmp_path):
    """The default load generator (Locust, in its own process) applies the same completion rule as the builtin
    BSS (protocol.messages.fenced_refusal): a fenced pause run through it completes each workflow once."""
    row = _run(tmp_path / "locust", "fenced", "slm-pause", load="locust")
    assert row["completed"] == row["requests"] == "6"
    assert (row["lost"], row["duplicated"], row["concurrent_owners"], row["double_effects"]) == ("0", "0", "0", "0")
    assert row["verdict"] == "pass", row["verdict_reason"]
    completed = _kinds(tmp_path / "locust", "completed")
    assert completed and all(isinstance(e.get("epoch"), int) for e in completed), "the notices carry their epoch"


@pytest.mark.slow
def test_the_papers_mechanism_on_the_same_pause_drives_twice(tmp_path):
    row = _run(tmp_path / "paper", "state-sharing", "slm-pause")
    assert int(row["duplicated"]) >= 1 and int(row["concurrent_owners"]) >= 1
    assert row["verdict"] == "fail"


@pytest.mark.slow
@pytest.mark.skipif(not SERVER.exists(), reason="rabbitmq-server not installed")
def test_fenced_on_the_bus_survives_a_broker_pause_without_driving_twice(tmp_path):
    row = _run(tmp_path / "bus", "fenced", "broker-pause", "--transport", "amqp", "--set", "queues=durable")
    assert (row["lost"], row["duplicated"], row["concurrent_owners"], row["double_effects"]) == ("0", "0", "0", "0")
    assert row["verdict"] == "pass", row["verdict_reason"]


def test_a_worker_applies_no_effect_of_an_epoch_a_later_one_overtook_during_the_work():
    """targets.worker checks the epoch again when the work is done, before the effect counts: an old owner's
    call that was running when the new owner's arrived is refused then (no task_end); a repeat of the new
    epoch is answered from the first execution without doing the work again."""
    from protocol.spec import ServiceSpec
    from targets.worker import Worker

    events: list[tuple[str, dict]] = []

    class Sink:
        def emit(self, kind: str, **fields: object) -> dict:
            events.append((kind, fields))
            return {"kind": kind, **fields}

    z = config.build({"mechanism": "fenced", "k": 3, "n": 2, "t_i": 1.0, "time_scale": 0.2}).resolved()
    worker = Worker(ServiceSpec("m1", "worker", "r", "127.0.0.1", {"op": 0}, z, task=1), Sink())  # type: ignore[arg-type]

    async def scenario() -> tuple[bytes, bytes, bytes]:
        old = asyncio.create_task(worker._fenced_task("req-1", 1, 10))
        await asyncio.sleep(0.05)  # the old owner's call is working (t_i = 0.2 s wall)
        new = await worker._fenced_task("req-1", 2, 10)
        again = await worker._fenced_task("req-1", 2, 10)
        return await old, new, again

    old, new, again = asyncio.run(scenario())
    assert b'"fenced": true' in old and b'"fenced"' not in new and again == new
    ends = [f["epoch"] for kind, f in events if kind == "task_end"]
    assert ends == [2], f"only the later epoch's effect counts: {events}"
    assert [k for k, _ in events].count("task_start") == 2 and ("task_repeated", {"req": "req-1", "task": 1,
                                                                                   "epoch": 2}) in events
