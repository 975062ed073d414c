"""The protocol package is the written contract: what the code emits and serves must be what it says."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path

import pytest

from faults import aim
from harness import checker
from harness.analysis import fit
from harness.checker import detection, fault_timeline, outcomes, verdicts
from harness.experiment import warmup
from harness.history import Collector
from harness.history import events as history_events
from harness.measure import metrics, summary
from protocol.events import KINDS, EventSink
from protocol.messages import PLANES, ROUTES, padded
from protocol.spec import ServiceSpec, address

ROOT = Path(__file__).resolve().parent.parent
EMITTERS = ("targets", "harness", "faults", "protocol")


def _sources(*packages: str) -> str:
    return "\n".join(p.read_text() for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py")))


def test_every_event_kind_the_code_emits_is_in_the_contract():
    text = _sources(*EMITTERS)
    service = set(re.findall(r'\bemit\(\s*"([a-z_]+)"\s*[,)]', text))
    harness_side = set(re.findall(r'\bemit\(\s*"(?:bss|harness|locust)",\s*"([a-z_]+)"', text))
    emitted = (service - {"bss", "harness", "locust"}) | harness_side
    assert len(emitted) > 30, emitted
    assert emitted - set(KINDS) == set(), "undocumented event kinds: add them to protocol.events.KINDS"


def test_every_event_kind_the_checker_and_metrics_read_is_in_the_contract():
    readers = (outcomes, detection, fault_timeline, verdicts, metrics, summary, history_events, warmup, fit, aim)
    text = "\n".join(Path(module.__file__ or "").read_text() for module in readers)
    read = set(re.findall(r'\["kind"\]\s*==\s*"([a-z_]+)"', text))
    groups = re.findall(r'\["kind"\]\s*in\s*\(([^)]*)\)', text) + re.findall(r"of_kind\([^,]+,\s*([^)]*)\)", text)
    read |= {k for group in groups for k in re.findall(r'"([a-z_]+)"', re.sub(r'svc="\w+"', "", group))}
    assert {"task_start", "peer_dead", "completed", "hb_sent"} <= read
    assert read - set(KINDS) == set()


def test_the_routes_the_services_serve_are_the_contract_s():
    served = set(re.findall(r'planes\.route\("(\w+)", "(\w+)", "(/[\w-]+)"', _sources("targets")))
    contract = {(r.plane, r.method, r.path) for r in ROUTES if set(r.served_by) - {"bss"}}
    assert served == contract
    assert {r.plane for r in ROUTES} == set(PLANES)


@pytest.mark.parametrize("size", [0, 10, 100, 1000, 20_000])
def test_bodies_are_padded_to_exactly_the_paper_s_size(size):
    body = padded({"req": "r", "task": 3}, size)
    assert len(body) == max(size, len(b'{"req":"r","task":3,"pad":""}'))
    assert json.loads(body)["task"] == 3


def test_a_spec_survives_its_json_and_addresses_parse():
    spec = ServiceSpec("slm-a", "slm", "run1", "127.1.2.3", dict(PLANES), {"n": 3}, peers={"slm-b": {"hb": "h:1"}})
    assert ServiceSpec.from_json(spec.to_json()) == spec
    assert address("127.1.2.3:8001") == ("127.1.2.3", 8001)


def test_a_sink_that_lost_events_says_so_and_the_verdict_becomes_unknown():
    """A real collector socket: events sent while it is unreachable are counted, owned up to with one
    `events_lost` once it is back, and that hole makes a clean history's verdict "unknown"."""

    async def main() -> list[dict]:
        collector = Collector()
        addr = await collector.start("127.0.0.1")
        sink = EventSink(addr, "slm-a", "run1")
        sink.emit("started", role="slm")
        await asyncio.sleep(0.05)
        sink.sock.close()  # the connection breaks, and the collector's port is gone for a while
        sink.sock = None
        port = int(addr.rsplit(":", 1)[1])
        await collector.close()
        for _ in range(3):
            sink.emit("hb_sent", seq=1, peers=1, bytes=100)
        assert sink.lost == 3
        back = Collector()
        server = await asyncio.start_server(back._serve, "127.0.0.1", port)
        sink.emit("hb_sent", seq=2, peers=1, bytes=100)
        await asyncio.sleep(0.1)
        server.close()
        await server.wait_closed()
        return collector.events + back.events

    events = asyncio.run(main())
    lost = [e for e in events if e["kind"] == "events_lost"]
    assert [e["lost"] for e in lost] == [3]
    gaps = {"events_lost": sum(e["lost"] for e in lost)}
    assert checker.verdict(events, holes=gaps).status == "unknown"
    assert "events lost" in checker.verdict(events, holes=gaps).reason
    assert "events lost" not in checker.verdict(events).reason  # (no submission: unknown for that reason only)


def test_a_port_nobody_listens_on_is_refused_at_once():
    """The sink's reconnect relies on a refused connection failing fast, not hanging the service."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = EventSink(f"127.0.0.1:{port}", "x", "run1")
    sink.emit("started", role="worker")
    assert sink.lost == 1


def test_a_collector_that_meets_no_host_is_dialled_again_only_after_a_pause():
    """A dial that hangs (here: a listener whose accept queue is full, so the kernel drops the SYN, as for a
    vanished host) blocks the service for one CONNECT_TIMEOUT, not for every event: the next events within the
    back-off count as lost at once, and the pause doubles. (Each event would block 2 x 2 s without it.)"""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=1)  # fills the accept queue
        try:
            t0 = time.monotonic()
            sink = EventSink(f"127.0.0.1:{port}", "slm-a", "run1")
            for seq in range(5):
                sink.emit("hb_sent", seq=seq, peers=1, bytes=100)
            took = time.monotonic() - t0
        finally:
            filler.close()
    assert sink.lost == 5 and sink.sock is None
    assert EventSink.CONNECT_TIMEOUT * 0.9 <= took < 2 * EventSink.CONNECT_TIMEOUT, took  # one dial, not ten
    assert sink.backoff == EventSink.BACKOFF[0] and sink.retry_at > time.monotonic()


def test_the_target_contract_doc_carries_the_code_s_tables():
    from protocol.__main__ import tables

    assert tables() in (ROOT / "docs" / "targets.md").read_text()
