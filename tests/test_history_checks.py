"""The checker's view of warm-up and of false suspicions, and CPU counted from a baseline: pure functions
over histories (written out as a run records them), and a real process for the sampler."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from harness import checker, history
from harness.measure.cpu import CpuSampler


def ev(t: float, svc: str, kind: str, **fields) -> dict:
    return {"t": t, "wall": t, "svc": svc, "kind": kind, **fields}


def test_warm_up_requests_vanish_from_every_figure_but_the_rest_stays():
    events = [
        ev(1, "bss", "submitted", req="w", warmup=True), ev(2, "slm-a", "task_start", req="w", task=1),
        ev(3, "bss", "completed", req="w", by="slm-a", n=1, warmup=True),
        ev(3.5, "slm-a", "hb_sent", bytes=40, peers=1), ev(4, "harness", "load_start"),
        ev(5, "bss", "submitted", req="r"), ev(6, "bss", "completed", req="r", by="slm-a", n=1),
    ]
    kept = history.measured(events)
    assert [e["kind"] for e in kept] == ["hb_sent", "load_start", "submitted", "completed"]
    v = checker.verdict(kept)
    assert (v.requests, v.completed) == (1, 1)
    assert history.measured(kept) is kept  # nothing to drop: the very list


def test_false_suspicions_are_those_no_fault_explains():
    events = [
        ev(0, "harness", "ready"),
        ev(1, "slm-a", "peer_dead", peer="slm-b"),  # before the load: not counted with since=2
        ev(2, "harness", "load_start"),
        ev(3, "slm-a", "peer_dead", peer="slm-b"),  # nothing happened to slm-b: false
        ev(4, "harness", "fault", action="pause", target="slm-b"),
        ev(5, "slm-a", "peer_dead", peer="slm-b"),  # during the pause: the fault's doing
        ev(6, "harness", "fault", action="resume", target="slm-b"),
        ev(6.5, "slm-b", "peer_dead", peer="slm-a"),  # within the grace after the pause ended
        ev(9, "slm-b", "peer_dead", peer="slm-a"),  # long after: false
        ev(10, "harness", "fault", action="kill", target="slm-b"),
        ev(11, "slm-a", "peer_dead", peer="slm-b"),  # the kill: true
    ]
    false = checker.false_suspicions(events, grace=1.0, since=2)
    assert [e["t"] for e in false] == [3, 9]
    assert [e["t"] for e in checker.false_suspicions(events, grace=1.0)] == [1, 3, 9]


def test_the_cpu_sampler_counts_from_its_baseline():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", burn])
    try:
        time.sleep(1.0)  # it has burnt its 0.4 s and sleeps

        async def measure() -> dict:
            sampler = CpuSampler({"p": proc.pid}, interval=0.05)
            sampler.start()
            await asyncio.sleep(0.2)
            return await sampler.stop()

        (user, system), = asyncio.run(measure()).values()
        assert user + system < 0.05, "the 0.4 s burnt before the baseline is not counted"
    finally:
        proc.kill()
        proc.wait()


def test_a_services_cpu_is_its_whole_live_process_tree():
    """A master that forks a worker which does the work (tacker-conductor's shape) is charged the worker's CPU
    while the worker lives, and keeps it once the worker has exited and been reaped."""
    import subprocess
    import sys
    import time as clock

    import psutil

    from harness.measure.cpu import CpuSampler, descendants
    from harness.measure.cpu import used as cpu_used

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(3)"
    master = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {burn!r}]).wait()\ntime.sleep(60)"])
    try:
        sampler = CpuSampler({"conductor": master.pid})
        sampler.mark()

        def used() -> float:
            sampler.sample()
            return sum(sampler.last["conductor"]) - sum(sampler.base["conductor"])

        deadline = clock.monotonic() + 30  # generous: the worker's 0.3 CPU s beside a busy suite
        while used() < 0.25 and clock.monotonic() < deadline:
            clock.sleep(0.05)
        assert descendants(master.pid), "the worker is still alive: what was counted is the live tree"
        live = used()
        assert live >= 0.25, f"the live worker's CPU is the service's: {live:.3f} s"
        while descendants(master.pid) and clock.monotonic() < deadline:
            clock.sleep(0.1)
        assert not descendants(master.pid)
        assert used() >= live - 0.01, "the reaped worker's CPU stays the service's"
        # and not only by the sampler's never-down guard: the master's own counters hold it once reaped
        assert sum(cpu_used(psutil.Process(master.pid))) >= live - 0.05
    finally:
        master.kill()
        master.wait()
