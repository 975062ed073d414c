"""The fenced mechanism on the distributed design (issue 22, docs/fencing.md): the witness's rules on its real
handlers, the model's terms, and real runs where a paused or crashed module is replaced without a hop driven
twice, beside the paper's distributed design that drives it twice on the same pause."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness.plan import config
from harness.plan.deploy import WITNESS, plan
from protocol.spec import ServiceSpec
from targets.witness import Witness
from tests.test_fenced import _kinds, takeovers_without_a_second_driver
from tests.test_fenced import _run as run_design

# --- the witness, on its handlers ------------------------------------------------------------------------

MODULES = ("m1a", "m1b", "m2a", "m2b")
REQ = "0f0e0d0c-0b0a-4000-8000-000000000001"


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.events.append((kind, fields))
        return {"kind": kind, "t": time.monotonic(), **fields}


class Request:
    """What targets.http.read_json reads of an aiohttp request: the body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.raw = json.dumps(body).encode()

    async def read(self) -> bytes:
        return self.raw


def _witness(t_h: float = 0.3) -> tuple[Witness, Sink]:
    z = config.build({"design": "distributed", "mechanism": "fenced", "n": 2, "t_h": t_h,
                      "h_r": 100}).resolved()
    sink = Sink()
    spec = ServiceSpec(WITNESS, "witness", "r", "127.0.0.1", {"op": 0, "hb": 0, "state": 0}, z,
                       peers={m: {} for m in MODULES})
    return Witness(spec, sink), sink  # type: ignore[arg-type]


def _call(handler: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = asyncio.run(handler(Request(body)))
    return json.loads(response.body)


def _vote(w: Witness, candidate: str, epoch: int, stamp: str | None, task: int = 1) -> dict[str, Any]:
    return _call(w.handle_vote, {"req": REQ, "epoch": epoch, "candidate": candidate, "static": "m1a",
                                 "task": task, "witness": stamp})


def _confirm(w: Witness, owner: str, epoch: int, stamp: str | None, task: int = 1) -> dict[str, Any]:
    return _call(w.handle_confirm, {"req": REQ, "epoch": epoch, "owner": owner, "static": f"m{task}a",
                                    "task": task, "witness": stamp})


def test_the_witness_acknowledges_a_heartbeat_with_its_incarnation_and_only_from_the_chain():
    w, _ = _witness()
    assert _call(w.handle_heartbeat, {"id": "m1a", "uuid": "x"}) == {"ok": True, "uuid": w.uuid}
    assert not w.is_dead("m1a") and not w.is_dead("m1b"), "a module never heard from counts as heard at its start"
    w.started -= 0.31
    assert w.is_dead("m1b") and not w.is_dead("m1a"), "t_h after its start, a module it never heard from is dead"
    with pytest.raises(Exception) as err:
        _call(w.handle_heartbeat, {"id": "slm-a", "uuid": "x"})
    assert getattr(err.value, "status", None) == 404


def test_the_witness_says_nothing_of_a_request_received_under_another_incarnation():
    """A restarted witness forgot its promises: it must not promise again what an earlier one may have."""
    w, sink = _witness()
    for stamp in (None, "an-earlier-incarnation"):
        assert _vote(w, "m1b", 2, stamp) == {"granted": False}
        assert _confirm(w, "m1a", 1, stamp) == {"ok": False}
    assert not w.promises and not sink.events


def test_the_witness_grants_a_twin_the_next_epoch_only_once_the_owner_was_silent_for_t_h():
    w, sink = _witness(t_h=0.2)
    _call(w.handle_heartbeat, {"id": "m1a", "uuid": "x"})
    assert _confirm(w, "m1a", 1, w.uuid)["ok"] is True
    refused = _vote(w, "m1b", 2, w.uuid)
    assert refused == {"granted": False, "epoch": 1, "owner": "m1a"}, "it still hears the owner: its lease holds"
    time.sleep(0.25)
    assert _vote(w, "m1b", 2, w.uuid)["granted"] is True
    assert _vote(w, "m1a", 2, w.uuid)["granted"] is False, "one candidate per epoch"
    assert _confirm(w, "m1a", 1, w.uuid) == {"ok": False, "epoch": 2, "owner": "m1b"}, "the old owner is stale"
    assert _confirm(w, "m1b", 2, w.uuid)["ok"] is True
    assert [(k, f["task"], f["epoch"], f["candidate"]) for k, f in sink.events] == [("vote_granted", 1, 2, "m1b")]


def test_the_witness_keeps_each_hops_epochs_apart():
    w, _ = _witness(t_h=0.05)
    time.sleep(0.06)
    assert _vote(w, "m1b", 2, w.uuid)["granted"] is True
    assert _confirm(w, "m2a", 1, w.uuid, task=2)["ok"] is True, "hop 2 of the same request is still epoch 1"


def test_the_fenced_chain_has_a_witness_linked_to_every_module_and_the_paper_chain_none():
    def deploy(mechanism: str) -> Any:
        z = config.build({"design": "distributed", "mechanism": mechanism, "n": 3})
        return plan(z, "r", lambda svc: "127.0.0.1", "127.0.0.1:9", None)

    fenced, paper = deploy("fenced"), deploy("state-sharing")
    assert [s.id for s in fenced.of_role("witness")] == [WITNESS] and not paper.of_role("witness")
    modules = fenced.of_role("module")
    assert len(modules) == 6 and all(s.witness["id"] == WITNESS for s in modules)
    assert set(fenced.service(WITNESS).peers) == {s.id for s in modules}
    assert {(link.src, link.plane) for link in fenced.links if link.dst == WITNESS} == {
        (s.id, plane) for s in modules for plane in ("hb", "state")}
    assert all(not s.witness for s in paper.of_role("module"))


def test_the_fenced_distributed_model_adds_each_hops_check_the_election_and_the_witness():
    from harness import model

    z = {"design": "distributed", "n": 6, "l_hb": 0.05, "h_s": 0.1, "h_r": 2}
    paper = model.evaluate(config.build(z))
    fenced = model.evaluate(config.build({**z, "mechanism": "fenced"}))
    assert fenced.t_c == pytest.approx(paper.t_c + 6 * 2 * 0.05), "one confirm round per hop, nothing to hide it"
    assert fenced.t_l == pytest.approx(paper.t_l + 2 * 0.05)
    assert fenced.Q_r == paper.Q_r + 1, "the witness"
    t_c = fenced.t_c
    eq8 = 2 * 6 * 0.1 * 2 + (6 * 200 + 6 * 0.1) / t_c  # the twins' heartbeats, the hops' state and 'done'
    assert fenced.B_rel == pytest.approx(eq8 + 2 * 6 * 0.1 * 2 + 2 * 6 * 0.1 / t_c), "+ the witness's heartbeats, "\
        "+ two asks of each hop's check"


def test_fenced_applies_to_both_replicated_designs_and_not_the_monolith():
    assert config.build({"design": "distributed", "mechanism": "fenced"}).mechanism == "fenced"
    with pytest.raises(Exception) as err:
        config.build({"design": "monolith", "mechanism": "fenced"})
    assert "the monolith has none" in str(err.value) and "\n" not in str(err.value)


# --- real runs --------------------------------------------------------------------------------------------

def _run(out: Path, mechanism: str, fault: str, *more: str) -> dict[str, str]:
    return run_design(out, mechanism, fault, *more, design="distributed")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["slm-crash", "slm-pause"])
def test_a_fenced_chain_replaces_a_module_without_driving_a_hop_twice(tmp_path, fault):
    row = _run(tmp_path / fault, "fenced", fault, "--fault-at", "worst")
    takeovers = takeovers_without_a_second_driver(tmp_path / fault, row, fault)
    granted = {(e["req"], e["epoch"]) for e in _kinds(tmp_path / fault, "vote_granted") if e["svc"] == WITNESS}
    assert {(e["req"], e["epoch"]) for e in takeovers} <= granted, "with the twin's owner silent, the witness decides"


@pytest.mark.slow
def test_the_papers_chain_on_the_same_pause_drives_a_hop_twice(tmp_path):
    row = _run(tmp_path / "paper", "state-sharing", "slm-pause", "--fault-at", "worst")
    assert int(row["concurrent_owners"]) >= 1 and int(row["double_effects"]) >= 1
    assert row["verdict"] == "fail"
