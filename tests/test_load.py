"""Locust as the BSS, in its own process, against live designs: exactly-once completion judged by the checker
from the events Locust streams, Locust's own figures, open-loop rate, timeouts, and no process left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from harness import checker
from harness.experiment.testbed import Testbed
from harness.history import Collector
from harness.load.locust_runner import LocustLoad, LocustLoadError, free_address, parse_stats, percentile
from harness.runtime import leftovers
from tests.helpers import experiment, run

ROOT = Path(__file__).resolve().parents[1]
CALM = {"t_h": 20.0}  # no fault is meant here: a 1 s (wall) heartbeat time-out, so a busy machine causes no
# false suspicion (the default 3 / h_r is 75 ms at time_scale 0.05), hence no takeover and no duplicate


def locusts(run_id: str) -> list[psutil.Process]:
    """Live Locust processes of one run (found like `harness clean` does: MANOBENCH_RUN in the environment)."""
    found = []
    for proc in leftovers.processes(run_id):
        try:
            if "locust" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def locust_bed(z, workdir: Path) -> Testbed:
    """A Testbed whose services send their completion notices to the Locust process's BSS."""
    return Testbed(z, workdir, external_bss=True)


def load_for(tb: Testbed, **kw) -> LocustLoad:
    assert tb.deployment is not None
    return LocustLoad(tb.deployment.entry, tb.bss_address, tb.collector.address, tb.workdir,
                      start_process=tb.runtime.start_process, run=tb.run, secret=tb.secret, **kw)


def listening(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        return True
    except OSError:
        return False


def submission_rate(events) -> float:
    times = sorted(checker.submitted(events).values())
    return (len(times) - 1) / (times[-1] - times[0])


# -- pure: no process ---------------------------------------------------------------------------------------


def test_harness_side_never_imports_locust_or_gevent():
    code = "import sys, harness.load.locust_runner; print(any(m in sys.modules for m in ('locust', 'gevent')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_parse_stats_reads_the_workflow_entry_like_locust():
    times = {"10": 2, "20": 5, "30": 2, "500": 1}  # JSON keys are strings; 10 workflows
    entries = [
        {"method": "POST", "name": "/x", "num_requests": 99, "num_failures": 0, "response_times": {"1": 99}},
        {"method": "WORKFLOW", "name": "instantiate", "num_requests": 10, "num_none_requests": 0, "num_failures": 1,
         "min_response_time": 9.6, "max_response_time": 503.2, "response_times": times},
    ]
    r = parse_stats(entries, exit_code=0, duration=1.0)
    assert (r.requests, r.failures, r.median_ms, r.p95_ms, r.max_ms) == (10, 1, 20.0, 500.0, 503.2)
    assert percentile({10.0: 1}, 1, 0.95) == 10.0
    assert parse_stats([], exit_code=0, duration=0.0).requests == 0


# -- live ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_closed_loop_30_requests_5_users_complete_exactly_once(tmp_path):
    z = experiment(design="centralised", requests=30, users=5, **CALM)

    async def go():
        async with locust_bed(z, tmp_path) as tb:
            result = await LocustLoad.for_testbed(tb).run(timeout=60)
            assert locusts(tb.run) == []
        return tb, result

    tb, result = run(go())
    events = tb.collector.events
    v = checker.verdict(events)
    assert (v.requests, v.completed, v.lost, v.duplicated) == (30, 30, [], {})
    assert all(e["to"] == 2 for e in events if e["kind"] == "submitted")  # k = 2 SLMs: sent to both
    assert (result.requests, result.failures, result.exit_code) == (30, 0, 0)
    assert result.bss["completed"] == 30 and result.bss["events_lost"] == 0
    # Locust's latency is the history's: same monotonic stamps (Locust keeps the max exact)
    assert result.max_ms == pytest.approx(max(checker.latencies(events).values()) * 1000, abs=0.01)
    assert 0 < result.median_ms <= result.p95_ms <= result.max_ms
    saved = json.loads(Path(result.files["json"]).read_text())
    assert any(e["method"] == "WORKFLOW" and e["num_requests"] == 30 for e in saved)
    assert {"stats_csv", "failures_csv"} <= set(result.files)


@pytest.mark.slow
def test_open_loop_holds_the_rate_whatever_the_completions(tmp_path):
    rate, count = 40.0, 120  # 3 s; ~0.25 s per workflow: ~10 in flight, more than the single scheduler user

    z = experiment(design="distributed", requests=count, rate=rate, **CALM)  # hop 0: P_{0,1} kB

    async def go():
        async with locust_bed(z, tmp_path) as tb:
            result = await LocustLoad.for_testbed(tb).run(timeout=60)
        return tb, result

    tb, result = run(go())
    events = tb.collector.events
    v = checker.verdict(events)
    assert (v.requests, v.completed, v.lost, v.duplicated) == (count, count, [], {})
    assert (result.requests, result.failures) == (count, 0)
    assert tb.deployment is not None and tb.deployment.entry_bytes > 0
    sizes = {e["bytes"] for e in events if e["kind"] == "request_received" and e.get("task") == 1}
    assert sizes == {tb.deployment.entry_bytes}, "requests padded to P_{0,1} kB, as harness/load/bss.py does"
    achieved = submission_rate(events)
    print(f"open loop: asked {rate}/s, history says {achieved:.2f}/s, locustfile says {result.offered_rate:.2f}/s")
    assert achieved == pytest.approx(rate, rel=0.10)
    assert result.offered_rate == pytest.approx(achieved, rel=0.01)


@pytest.mark.slow
def test_stalled_workflows_time_out_as_failures_and_the_run_ends_by_itself(tmp_path):
    async def go():
        async with locust_bed(experiment(design="centralised", **CALM), tmp_path) as tb:
            assert tb.deployment is not None
            for worker in tb.deployment.of_role("worker"):
                tb.runtime.pause(worker.id)  # the SLMs accept requests, no task ever finishes
            started = time.monotonic()
            result = await load_for(tb, requests=4, users=2, timeout=1.0).run(timeout=30)
            took = time.monotonic() - started
            assert locusts(tb.run) == []
        return tb, result, took

    tb, result, took = run(go())
    assert (result.requests, result.failures, result.exit_code) == (4, 4, 0)
    assert result.bss["timed_out"] == 4 and result.bss["not_accepted"] == 0
    assert took < 15, "2 rounds of 1 s timeouts, plus Locust's start-up"
    assert 1000 <= result.median_ms <= result.max_ms < 1500  # a failure carries its elapsed time
    assert "WorkflowTimeout" in Path(result.files["failures_csv"]).read_text()
    assert len(checker.lost(tb.collector.events)) == 4


@pytest.mark.slow
def test_unreachable_entry_is_not_accepted_and_the_bss_endpoint_checks_messages(tmp_path):
    async def go():
        collector = Collector(tmp_path / "events.jsonl")
        await collector.start()
        host = "127.0.0.1"
        load = LocustLoad([free_address(host)], free_address(host), collector.address, tmp_path / "locust",
                          requests=3, users=3, timeout=2.0)
        try:
            await load.start()
            await load.ready()
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://{load.bss}/complete", data=b"{not json") as resp:
                    bad = resp.status
                async with session.post(f"http://{load.bss}/complete", json={"req": "stray", "by": "x"}) as resp:
                    stray = resp.status
            result = await load.wait(timeout=30)
        finally:
            await load.stop()
            await collector.close()
        return load, result, bad, stray, collector.events

    load, result, bad, stray, events = run(go())
    assert (bad, stray) == (400, 200)
    assert (result.requests, result.failures, result.exit_code) == (3, 3, 0)
    assert result.bss["not_accepted"] == 3
    kinds = [(e["svc"], e["kind"]) for e in events]
    assert kinds.count(("bss", "submitted")) == 3 and ("bss", "bad_message") in kinds
    assert [e["n"] for e in events if e["kind"] == "completed" and e["req"] == "stray"] == [1]
    assert locusts(load.run_id) == []


@pytest.mark.slow
def test_a_bss_address_in_use_fails_at_once(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bss = f"127.0.0.1:{taken.getsockname()[1]}"
        load = LocustLoad([free_address()], bss, None, tmp_path, requests=5, timeout=30)
        started = time.monotonic()
        with pytest.raises(LocustLoadError, match="exited with 4") as error:
            run(load.run())
    assert time.monotonic() - started < 15
    assert "cannot start the BSS" in error.value.log_tail
    assert locusts(load.run_id) == []


@pytest.mark.slow
def test_cancelling_or_timing_out_the_runner_leaves_no_locust_behind(tmp_path):
    async def go():
        async with locust_bed(experiment(design="centralised", **CALM), tmp_path) as tb:
            assert tb.deployment is not None
            for worker in tb.deployment.of_role("worker"):
                tb.runtime.pause(worker.id)
            # cancelled while waiting
            load = load_for(tb, requests=1000, users=4, timeout=30, name="locust-cancelled")
            task = asyncio.create_task(load.run())
            while load.proc is None:
                await asyncio.sleep(0.01)
            await load.ready()
            assert len(locusts(tb.run)) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert load.proc.returncode is not None and locusts(tb.run) == []
            # its own wait timeout: stopped with SIGTERM, so Locust still wrote what it had
            load = load_for(tb, requests=1000, users=4, timeout=1.0, name="locust-timeout")
            with pytest.raises(LocustLoadError, match="still running") as error:
                await load.run(timeout=4.0)
            assert locusts(tb.run) == []
            return error.value.result

    partial = run(go())
    assert partial is not None and partial.exit_code == 3, "stopped before its 1000 requests: exit code 3"
    assert partial.requests >= 4 and partial.failures == partial.requests


@pytest.mark.slow
def test_locust_stops_when_its_launcher_is_killed(tmp_path):
    """The harness SIGKILLed: nobody reaps or signals Locust, it notices its parent is gone and exits."""
    run_id = "lt" + os.urandom(5).hex()
    entry, bss = free_address(), free_address()
    code = (
        "import asyncio, sys; from pathlib import Path; from harness.load.locust_runner import LocustLoad;"
        f"asyncio.run(LocustLoad([{entry!r}], {bss!r}, None, Path(sys.argv[1]), requests=10000, timeout=60,"
        f" run={run_id!r}).run())"
    )
    workdir = Path(tempfile.mkdtemp(dir=tmp_path))
    launcher = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not listening(bss) and time.monotonic() < deadline:  # Locust is up and its users are running
            time.sleep(0.05)
        assert len(locusts(run_id)) == 1, "Locust did not start"
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 10
        while locusts(run_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert locusts(run_id) == []
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        leftovers.end(leftovers.processes(run_id))
