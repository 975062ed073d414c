"""The bus-aware model (harness/model/bus.py) against hand-computed values, and the broker faults' refusals."""

from __future__ import annotations

import math

import pytest

from faults import FAULTS, FaultContext, FaultError
from harness import model
from harness.history import Collector
from harness.model import bus
from harness.plan.config import build
from harness.plan.deploy import bus_legs, plan


def test_centralised_bus_adds_two_broker_passes_per_task_and_doubles_the_bodies() -> None:
    z = build({"design": "centralised", "transport": "amqp", "n": 4, "t_i": 5.0, "t_bus": 0.01})
    paper, m = model.evaluate(z), bus.evaluate(z)
    assert m.t_c == pytest.approx(paper.t_c + 8 * 0.01)
    # redo: shares after 1, 2, 3 -> the longest unshared run is one task: 1 heartbeat pass + 2 per task
    assert m.t_l == pytest.approx(paper.t_l + 3 * 0.01)
    assert m.B_op == pytest.approx(2 * 4 * (50 + 50) / m.t_c)
    hb = 2 * 2 * 0.1 * 2.0  # k(k-1) streams of h_s h_r, published and delivered
    assert m.B_rel == pytest.approx(hb + 2 * (200 * 3 + 0.1) / m.t_c)


def test_distributed_bus_counts_hop_zero_once_and_the_others_twice() -> None:
    z = build({"design": "distributed", "transport": "amqp", "n": 3, "t_i": 5.0, "P": [10, 20, 30], "t_bus": 0.0})
    m = bus.evaluate(z)
    copy = 10 + 2 * (20 + 30)
    assert m.t_c == pytest.approx(model.evaluate(z).t_c)
    assert m.B_op == pytest.approx(copy / m.t_c)
    assert m.B_rel == pytest.approx(2 * 6 * 0.1 * 2.0 + (copy + 2 * 3 * 0.1) / m.t_c)


def test_framing_adds_per_message_and_leg_and_http_leaves_the_columns_empty() -> None:
    base = {"design": "centralised", "transport": "amqp", "n": 2, "t_bus": 0.0}
    plain, framed = bus.evaluate(build(base)), bus.evaluate(build({**base, "amqp_frame": 0.1}))
    assert framed.B_op - plain.B_op == pytest.approx(2 * 2 * 0.2 / plain.t_c)  # 2 calls, message + reply
    assert all(math.isnan(v) for v in bus.columns(build({"design": "centralised"})).values())


def test_every_message_crosses_the_latency_the_model_gives_it() -> None:
    z = build({"design": "centralised", "transport": "amqp", "n": 2, "l_a": [0.01, 0.02], "l_b": [0.03, 0.04]})
    dep = plan(z, "r", lambda s: "127.0.0.1", "127.0.0.1:1", None)
    slm, m2 = dep.service("slm-a"), dep.service("m2")
    assert bus_legs(z, m2)["op"] == (0.04, 0.02)
    assert bus_legs(z, slm)["op"][1] + bus_legs(z, m2)["op"][1] == pytest.approx(0.02)  # SLM -> m_2: l_a,2
    assert bus_legs(z, m2)["op"][0] + bus_legs(z, slm)["op"][1] == pytest.approx(0.04)  # reply: l_b,2
    assert {link.dst for link in dep.links} == {"broker"} and slm.workers == [["bus:task.1"], ["bus:task.2"]]


@pytest.mark.parametrize("name", ["broker-crash", "broker-pause", "broker-partition"])
def test_broker_faults_need_the_bus(name: str, tmp_path) -> None:
    z = build({"design": "centralised", "fault": name, "link_backend": "proxy"})
    dep = plan(z, "r", lambda s: "127.0.0.1", "127.0.0.1:1", None)

    class NoLinks:
        def set_delay(self, *a: object) -> None: ...
        def cut(self, *a: object) -> None: ...
        def heal(self, *a: object) -> None: ...

    ctx = FaultContext(z, dep, Collector(tmp_path / "e.jsonl"), processes=object(), links=NoLinks(),  # type: ignore[arg-type]
                       model=model)
    import asyncio

    with pytest.raises(FaultError, match="--transport amqp"):
        asyncio.run(FAULTS[name](ctx).setup())


def test_a_worker_crash_on_transient_queues_costs_the_slms_rpc_time_out() -> None:
    """The call died with the replica that took (and acked) it: t_l is the SLM's wait for its reply, 10 t_K
    + 30 s + 5 wall s; on durable queues the broker hands the call on and Eq 3's t_l stands."""
    base = {"design": "centralised", "transport": "amqp", "fault": "worker-crash", "n": 4, "t_i": [5, 5, 8, 5],
            "time_scale": 0.2}
    transient, durable = build(base), build({**base, "queues": "durable"})
    assert bus.evaluate(transient).t_l == pytest.approx(10 * 8 + 30 + 5 / 0.2)  # worst: the longest task
    assert bus.evaluate(build({**base, "fault_at": "task:2"})).t_l == pytest.approx(10 * 5 + 30 + 25)
    assert bus.evaluate(durable).t_l == pytest.approx(model.evaluate(durable).t_l + bus.terms(durable).recovery
                                                      * durable.t_bus)
    assert bus.evaluate(build({**base, "fault": "slm-crash"})).t_l < 20
