"""Reference implementations under real processes and sockets: exactly-once completion, the UUID load
split, and recovery from a SIGKILLed orchestrator or module at a chosen point of a workflow."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from harness import checker
from harness.experiment.testbed import Testbed
from tests.helpers import experiment, kill_when, load, new_req, owner_of, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "design,mechanism",
    [("monolith", "state-sharing"), ("centralised", "state-sharing"), ("centralised", "restart"),
     ("distributed", "state-sharing")],
)
def test_100_requests_complete_exactly_once(tmp_path, design, mechanism):
    z = experiment(design=design, mechanism=mechanism)
    events = run(load(tmp_path, z, requests=100, users=20))
    v = checker.verdict(events)
    assert (v.requests, v.completed, v.lost, v.duplicated) == (100, 100, [], {})
    assert checker.reexecuted(events) == {}
    assert all(count == 1 for count in checker.executions(events).values())
    assert len(checker.executions(events)) == 100 * z.n


@pytest.mark.parametrize("k", [2, 3])
def test_centralised_load_splits_by_uuid_rule(tmp_path, k):
    z = experiment(design="centralised", k=k)
    events = run(load(tmp_path, z, requests=60, users=20))
    uuids = {e["svc"]: e["uuid"] for e in events if e["kind"] == "started" and e.get("role") == "slm"}
    ranked = [svc for _, svc in sorted((u, s) for s, u in uuids.items())]
    assert len(ranked) == k
    processed = checker.processed_by(events)
    expected = {req: ranked[uuid.UUID(req).int % k] for req in checker.submitted(events)}
    assert {req: {slm} for req, slm in expected.items()} == processed
    assert set(expected.values()) == set(ranked), "with 60 random UUIDs every SLM gets some"
    # every SLM received every request and the others logged it
    for slm in ranked:
        received = {e["req"] for e in events if e["kind"] == "request_received" and e["svc"] == slm}
        assert received == set(expected)


async def _kill_owner_at(tmp_path, z, trigger_kind, task):
    """One request; SIGKILL its owner right after it records `trigger_kind` for `task`."""
    req = new_req()
    async with Testbed(z, tmp_path) as tb:
        killed = kill_when(
            tb,
            lambda e: e["kind"] == trigger_kind and e.get("req") == req and e.get("task") == task,
            lambda e: e["svc"],
        )
        await tb.bss.submit(req)
        await tb.bss.wait(req, timeout=30)
        await asyncio.sleep(0.2)
    return req, killed, tb.collector.events


def _resumed_from(events, req):
    (takeover,) = [e for e in checker.takeovers(events) if e["req"] == req]
    return takeover


@pytest.mark.parametrize("j", [1, 3, 5])
def test_state_sharing_sp1_resumes_after_last_shared_task(tmp_path, j):
    z = experiment(design="centralised", n=6, s_p=1, s_o=1, time_scale=0.1)
    req, killed, events = run(_kill_owner_at(tmp_path, z, "state_share_sent", j))
    assert killed == [owner_of(events, req)]
    takeover = _resumed_from(events, req)
    assert takeover["from_task"] == j + 1 and takeover["last_shared"] == j
    runs = checker.executions(events)
    assert all(runs[(req, t)] == 1 for t in range(1, j + 1)), "no task <= j is run again"
    assert all(runs[(req, t)] >= 1 for t in range(1, z.n + 1))
    assert checker.verdict(events).ok


def test_state_sharing_sp3_resumes_from_last_share_point(tmp_path):
    # shares after tasks 1, 4 and 7: a crash after task 6 loses tasks 5 and 6 only
    z = experiment(design="centralised", n=8, s_p=3, s_o=1, time_scale=0.1)
    req, _killed, events = run(_kill_owner_at(tmp_path, z, "task_reply", 6))
    takeover = _resumed_from(events, req)
    assert takeover["from_task"] == 5 and takeover["last_shared"] == 4
    runs = checker.executions(events)
    assert all(runs[(req, t)] == 1 for t in range(1, 5))
    assert runs[(req, 5)] == 2 and runs[(req, 6)] == 2
    assert checker.verdict(events).ok


def test_restart_baseline_restarts_from_task_one(tmp_path):
    z = experiment(design="centralised", mechanism="restart", n=6, time_scale=0.1)
    req, _killed, events = run(_kill_owner_at(tmp_path, z, "task_reply", 4))
    takeover = _resumed_from(events, req)
    assert takeover["from_task"] == 1
    assert not any(e["kind"].startswith("state_share") for e in events)
    runs = checker.executions(events)
    assert all(runs[(req, t)] == 2 for t in range(1, 5)), "everything before the crash is redone"
    assert checker.verdict(events).ok


def test_centralised_k3_survives_owner_kill_under_load(tmp_path):
    z = experiment(design="centralised", k=3, n=4, time_scale=0.15)

    def during(tb):
        kill_when(tb, lambda e: e["kind"] == "task_reply" and e["task"] == 2, lambda e: e["svc"])

    events = run(load(tmp_path, z, requests=30, users=10, during=during))
    v = checker.verdict(events)
    assert (v.requests, v.completed, v.lost, v.duplicated) == (30, 30, [], {})
    assert v.takeovers >= 1
    (detection,) = checker.detections(events)
    # killed anywhere between two heartbeats: noticed between t_h - 1/h_r and t_h + l_hb after the kill
    assert detection.delay is not None
    assert (z.t_h - 1 / z.h_r) * z.time_scale * 0.9 <= detection.delay <= (z.t_h + z.l_hb) * z.time_scale + 0.1


@pytest.mark.parametrize("victim", ["m1a", "m1b", "m2a", "m2b", "m3a", "m3b"])
def test_distributed_survives_kill_of_any_module_instance(tmp_path, victim):
    z = experiment(design="distributed", n=3)

    def during(tb):
        # kill the victim as soon as it starts a task of its own: it then owns unfinished work
        kill_when(tb, lambda e: e["kind"] == "task_start" and e["svc"] == victim, lambda e: e["svc"])

    events = run(load(tmp_path, z, requests=20, users=5, during=during))
    v = checker.verdict(events)
    assert (v.requests, v.completed, v.lost, v.duplicated) == (20, 20, [], {})
    assert v.takeovers >= 1
    assert [d.target for d in checker.detections(events)] == [victim]


def test_testbed_leaves_no_process_even_when_its_body_fails(tmp_path):
    from harness.runtime import leftovers

    z = experiment(design="centralised")

    runs: list[str] = []

    async def body_recording_run():
        async with Testbed(z, tmp_path) as tb:
            runs.append(tb.run)
            assert leftovers.processes(tb.run), "services carry the run label"
            raise RuntimeError("the experiment body failed")

    with pytest.raises(RuntimeError, match="body failed"):
        run(body_recording_run())
    assert leftovers.processes(runs[0]) == []
