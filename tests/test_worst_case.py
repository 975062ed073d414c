"""`--fault-at worst` reaches the model's worst case (issue 13): the driver sends a last heartbeat that the
survivor receives, at the end of the worst task, falls silent and is SIGKILLed; the lost time t_r - t_c then
lands within [-2%, +5%] of the model's t_l (Eqs 3 and 7), at a slow and a fast heartbeat rate, give or take
JITTER s of wall time: beside another suite on 2 cores one scheduling delay of 50 ms moved it to +9.9% (t_l is
0.5 s of wall time at the fast rate). The tight band on a quiet host is the benchmark's
(benchmarks/bench_recovery.py --parts band), where timing targets belong.

Also the hb plane's control calls that make it possible (targets/membership.py: /hb-now, /release)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from harness import history
from harness.experiment.run import experiment
from harness.experiment.testbed import Testbed
from harness.plan import config
from tests.helpers import experiment as small
from tests.helpers import owner_of, run

pytestmark = pytest.mark.slow

BAND = (-0.02, 0.05)
JITTER = 0.06  # wall s: what a busy 2-core host may add to or take from one measured lost time
SILENT_KINDS = {"hb_sent", "task_call", "task_reply", "task_end", "state_share_sent", "forward_sent", "done_sent",
                "request_completed"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The monolith references (t_m), measured once for the whole module."""
    return tmp_path_factory.mktemp("monolith-cache")


@pytest.mark.parametrize("design,h_r,time_scale", [
    ("centralised", 0.25, 0.1), ("centralised", 2.0, 0.2), ("distributed", 0.25, 0.1), ("distributed", 2.0, 0.2),
])
def test_worst_crash_loses_the_models_t_l(tmp_path, cache, design, h_r, time_scale):
    # t_h is 1.2 s and 0.3 s of wall time: well above what a busy 2-core host takes for a crash. At time_scale 0.05
    # a 35 ms stall of one fault-free workflow beside another suite moved t_c enough to put the error at -5.1%
    # (one CI try in a fresh clone); at 0.1 the same stall is half as large against t_l
    z = config.build({"design": design, "n": 3, "t_i": 1.0, "h_r": h_r, "time_scale": time_scale,
                      "fault": "slm-crash", "fault_at": "worst", "requests": 4, "users": 1, "warmup": 4,
                      "s_z": 20, "P_a": 10, "P_b": 10, "P": 20})
    result = asyncio.run(experiment(z, tmp_path / "run", load="builtin", cache=cache, say=lambda _: None))
    row, events = result.summary, result.events
    assert (row["lost"], row["duplicated"]) == (0, 0)
    (kill,) = [e for e in events if e["kind"] == "fault" and e.get("action") == "kill"]
    victim = kill["target"]
    assert kill["hb_triggered"] and kill["silent_at"] < kill["t"]
    # the heartbeat went out at the real end of the task, never before its configured end
    assert kill["late_by"] >= -0.001, kill
    (dead,) = [e for e in events if e["kind"] == "peer_dead" and e["peer"] == victim]
    assert kill["hb_acked"] == [dead["svc"]], "the survivor acknowledged the last heartbeat"
    assert dead["last_seen"] >= kill["silent_at"], "the survivor's last news of the victim is that heartbeat"
    said = [e["kind"] for e in events
            if e["svc"] == victim and e["t"] > kill["silent_at"] and e["kind"] in SILENT_KINDS]
    assert not said, f"the victim acted after its last heartbeat: {said}"
    lost = row["t_r_measured"] - row["t_c_measured"]
    error = lost / row["t_l_model"] - 1
    slack = JITTER / (row["t_l_model"] * time_scale)
    assert BAND[0] - slack <= error <= BAND[1] + slack, (design, h_r, lost, row["t_l_model"], error, slack)


async def _post(session: aiohttp.ClientSession, url: str, body: dict, key: str | None) -> tuple[int, dict | str]:
    async with session.post(url, json=body, headers={"X-Manobench-Secret": key or ""}) as resp:
        return resp.status, (await resp.json() if resp.status == 200 else await resp.text())


async def _control_calls(tmp: Path) -> dict[str, object]:
    z = small(design="distributed", n=2, time_scale=0.1)
    got: dict[str, object] = {}
    async with Testbed(z, tmp) as tb, aiohttp.ClientSession() as session:
        assert tb.deployment is not None
        spec = tb.deployment.service("m1a")
        url = f"http://{spec.bind}:{spec.ports['hb']}"
        interval = z.time_scale / z.h_r
        key = spec.secret  # the instance's own key: the harness's control calls carry it (docs/security.md)
        got["now"] = await _post(session, url + "/hb-now", {}, key)
        got["silence"] = await _post(session, url + "/hb-now", {"silence": True}, key)
        silent_from = len(tb.collector.events)
        await asyncio.sleep(2 * interval)  # less than t_h = 3 intervals: the twin must not declare it dead
        got["while_silent"] = [e for e in tb.collector.events[silent_from:] if e["svc"] == "m1a"]
        got["release"] = await _post(session, url + "/release", {}, key)
        got["release_again"] = await _post(session, url + "/release", {}, key)
        req = await tb.bss.submit()
        await tb.bss.wait(req, timeout=30)
        owner = owner_of(tb.collector.events, req)  # of m1, the first `request_received`
        spec = tb.deployment.service(owner)
        owner_url = f"http://{spec.bind}:{spec.ports['hb']}"
        got["passed"] = await _post(session, owner_url + "/hb-now", {"req": req, "task": 1}, spec.secret)
        got["bad"] = [await _post(session, url + "/hb-now", body, key)
                      for body in ({"silence": "yes"}, {"req": req}, {"req": 7, "task": 1})]
        await asyncio.sleep(2 * interval)
    got["events"] = tb.collector.events
    return got


def test_hb_now_and_release_on_the_hb_plane(tmp_path):
    got = run(_control_calls(tmp_path))
    status, now = got["now"]  # type: ignore[misc]
    assert status == 200 and now["acked"] == ["m1b"] and now["unacked"] == [] and not now["silent"]
    status, silenced = got["silence"]  # type: ignore[misc]
    assert status == 200 and silenced["silent"] and silenced["acked"] == ["m1b"]
    assert got["while_silent"] == [], "a silent instance sends no heartbeat"
    assert got["release"] == (200, {"was_silent": True}) and got["release_again"] == (200, {"was_silent": False})
    status, _ = got["passed"]  # type: ignore[misc]
    assert status == 409, "a point already passed is refused, not waited for"
    assert [s for s, _ in got["bad"]] == [400, 400, 400]  # type: ignore[attr-defined]
    events = history.measured(got["events"])  # type: ignore[arg-type]
    triggered = [e for e in events if e["kind"] == "hb_sent" and e.get("triggered")]
    assert [(e["svc"], e["silence"]) for e in triggered] == [("m1a", False), ("m1a", True)]
    released = next(e["t"] for e in events if e["kind"] == "released")
    assert any(e["svc"] == "m1a" and e["kind"] == "hb_sent" and e["t"] > released for e in events), \
        "released, it heartbeats again"
    assert not [e for e in events if e["kind"] == "peer_dead"], "a silence shorter than t_h is no crash"
