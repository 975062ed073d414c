"""The services under hostile input: malformed or oversized messages get a 4xx answer and a recorded
event, never a crash; and a service listens only on the address it was given."""

from __future__ import annotations

import asyncio

import aiohttp
import psutil
import pytest

from harness import checker
from harness.experiment.testbed import Testbed
from tests.helpers import experiment, run

pytestmark = pytest.mark.slow

BAD = [
    ("op", "/request", b"not json", 400),
    ("op", "/request", b"[1, 2]", 400),
    ("op", "/request", b'{"req": 42}', 400),
    ("op", "/request", b'{"req": "not-a-uuid"}', 400),
    ("op", "/nowhere", b"{}", 404),
    ("hb", "/hb", b'{"id": "stranger", "uuid": "x"}', 404),
    ("hb", "/hb", b"\xff\xfe", 400),
    ("state", "/state", b'{"req": "r", "owner": "o", "last_task": 99}', 400),
    ("state", "/done", b'{"req": 1}', 400),
]


async def _hostile(tmp_path):
    z = experiment(design="centralised")
    async with Testbed(z, tmp_path) as tb:
        slm = tb.deployment.service("slm-a")
        answers = []
        async with aiohttp.ClientSession() as http:
            for plane, path, body, _ in BAD:
                url = f"http://{slm.bind}:{slm.ports[plane]}{path}"
                async with http.post(url, data=body) as resp:
                    answers.append(resp.status)
            huge = b'{"req": "' + b"x" * (20 * 1024 * 1024) + b'"}'
            async with http.post(f"http://{slm.bind}:{slm.ports['op']}/request", data=huge) as resp:
                answers.append(resp.status)
            async with http.get(f"http://{slm.bind}:{slm.ports['op']}/health") as resp:
                healthy = resp.status
        pids = {s.id: tb.runtime.pid(s.id) for s in tb.deployment.services}
        binds = {s.id: s.bind for s in tb.deployment.services}
        listening = {sid: {c.laddr.ip for c in psutil.Process(pid).net_connections("inet") if c.status == "LISTEN"}
                     for sid, pid in pids.items()}
        reqs = await tb.bss.drive(5, users=2, timeout=20)
        await tb.bss.wait_all(reqs, timeout=20)
        await asyncio.sleep(0.1)
    return answers, healthy, listening, binds, tb.collector.events


def test_bad_messages_get_4xx_and_an_event_and_change_nothing(tmp_path):
    answers, healthy, listening, binds, events = run(_hostile(tmp_path))
    assert answers == [status for *_, status in BAD] + [413]
    assert healthy == 200
    recorded = [e for e in events if e["kind"] == "bad_message" and e["svc"] == "slm-a"]
    assert len(recorded) == len(BAD) + 1
    assert {e["plane"] for e in recorded} == {"op", "hb", "state"}
    assert not [e for e in events if e["kind"] == "error"], "no handler crashed"
    v = checker.verdict(events)
    assert (v.requests, v.completed, v.lost, v.duplicated) == (5, 5, [], {}), "the service still works"
    assert all(listening[sid] == {binds[sid]} for sid in binds), "each service listens on its own address only"
