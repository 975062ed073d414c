"""Benchmark: orchestrator overhead per task (t_o achieved vs configured) and failure-detection delay
(declared dead - killed) against t_h, over at least 20 SIGKILLs, on real processes with proxied links.

    python benchmarks/bench_recovery.py [--kills 20] [--time-scale 0.2]

Detection is bounded by the model: a crash right after a heartbeat is noticed after t_h + l_hb, one right
before the next heartbeat after t_h + l_hb - 1/h_r. Everything printed is in paper seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from harness import checker, config
from harness.testbed import Testbed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def orchestrator_overhead(scale: float, work: str, workdir: Path) -> list[float]:
    """Gaps between a worker's reply and the SLM's next call: t_o as the SLM achieved it."""
    z = config.build({"design": "centralised", "n": 6, "t_i": 1.0, "t_o": 0.15, "time_scale": scale, "work": work,
                      "s_z": 20, "P_a": 10, "P_b": 10})
    async with Testbed(z, workdir, proxies=True) as tb:
        reqs = await tb.bss.drive(12, users=3, timeout=60)
        await tb.bss.wait_all(reqs, timeout=30)
    replies = {(e["req"], e["task"]): e["t"] for e in tb.collector.events if e["kind"] == "task_reply"}
    return [(e["t"] - replies[(e["req"], e["task"] - 1)]) / scale for e in tb.collector.events
            if e["kind"] == "task_call" and e["task"] > 1 and e["attempt"] == 0]


async def detection_delays(kills: int, scale: float, workdir: Path) -> tuple[list[float], config.Experiment]:
    """Kill one instance of each module pair at a random moment; the twin's detector says when it noticed."""
    per_round = 10
    z = config.build({"design": "distributed", "n": per_round, "t_i": 1.0, "time_scale": scale, "h_r": 2.0,
                      "P": 10, "s_z": 10})
    rng = random.Random(7)
    delays: list[float] = []
    rounds = 0
    while len(delays) < kills:
        rounds += 1
        async with Testbed(z, workdir / f"round{rounds}", proxies=True) as tb:
            await asyncio.sleep(0.5)
            for i in range(1, per_round + 1):
                await asyncio.sleep(rng.uniform(0.0, 1.0 / z.h_r) * scale)  # anywhere between two heartbeats
                tb.kill(f"m{i}{rng.choice('ab')}")
            await asyncio.sleep(3 * (z.t_h or 0) * scale)
        delays += [d.delay / scale for d in checker.detections(tb.collector.events) if d.delay is not None]
    return delays, z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--time-scale", type=float, default=0.2)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    started = time.monotonic()
    print(f"bench_recovery: time_scale {args.time_scale}, figures in paper seconds, work dir {workdir}")
    for work in ("sleep", "burn"):
        gaps = asyncio.run(orchestrator_overhead(args.time_scale, work, workdir / f"t_o-{work}"))
        print(f"t_o ({work:5}): configured 0.150 s, achieved mean {statistics.fmean(gaps):.3f} "
              f"p50 {pct(gaps, 0.5):.3f} p99 {pct(gaps, 0.99):.3f} over {len(gaps)} task boundaries")
    delays, z = asyncio.run(detection_delays(args.kills, args.time_scale, workdir / "kills"))
    assert z.t_h is not None
    low, high = z.t_h + z.l_hb - 1 / z.h_r, z.t_h + z.l_hb
    inside = sum(low - 0.05 <= d <= high + 0.05 for d in delays)
    print(f"detection over {len(delays)} kills: t_h {z.t_h:.3f} s, h_r {z.h_r:g}/s, l_hb {z.l_hb:.3f} s; "
          f"delay mean {statistics.fmean(delays):.3f} min {min(delays):.3f} p50 {pct(delays, 0.5):.3f} "
          f"max {max(delays):.3f} s; model window [{low:.3f}, {high:.3f}] s holds {inside}/{len(delays)}")
    print(f"bench_recovery: done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
