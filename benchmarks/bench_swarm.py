"""Swarm runtime beside the docker runtime: bring-up and teardown time, kill latency by each path, and the
clock-offset uncertainty the swarm runtime measures per node.

    .venv/bin/python benchmarks/bench_swarm.py [--design centralised] [--kills 4] [--rounds 2]

- bring-up: `Testbed` enter (leftover and image check, the network (bridge / overlay + gateway), collector,
  proxies, every container or service started, every /health; swarm: also the agent and the first clock
  exchange); down: `Testbed` exit.
- kill, fault decided -> the service's process is gone (its pidfd readable) and -> `kill()` returned: the
  direct SIGKILL both runtimes use for a container on the harness's host, and the swarm's path for one on
  another node, the node's fault agent (HTTP on the overlay -> that node's Engine kill), exercised here on
  this host's own agent.
- clocks: the offset of each node from the harness, best of 8 NTP-style exchanges, and its uncertainty (half
  the round trip), at the start and the end of each swarm bring-up. The docker runtime has one host and one
  monotonic clock: no offset to measure (0 by construction).

A swarm is needed: run it on a manager (`docker swarm init --advertise-addr 127.0.0.1` makes a one-node one;
`--init` does that here and leaves it afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_docker import timed_kill
from harness.experiment.testbed import Testbed
from harness.plan import config
from harness.runtime import engine, image
from harness.runtime.swarm import SwarmRuntime


async def one(runtime: str, design: str, tmp: Path, kills: int) -> dict[str, object]:
    z = config.build({"runtime": runtime, "design": design, "n": max(3, 2 * kills)})
    t0 = time.monotonic()
    tb = Testbed(z, tmp / f"{runtime}-{time.monotonic_ns()}", links_backend="proxy")
    result: dict[str, object] = {}
    async with tb:
        result["bring_up"] = time.monotonic() - t0
        rt = tb.runtime
        workers = sorted((s.id for s in tb.deployment.services if s.role == "worker"),  # type: ignore[union-attr]
                         key=lambda s: int(s[1:]))
        lat: dict[str, list[tuple[float, float]]] = {}
        for name in workers[:kills]:
            lat.setdefault("direct SIGKILL", []).append(timed_kill(rt.kill, name, rt.pid(name)))
            await asyncio.sleep(0.2)
        if isinstance(rt, SwarmRuntime):
            for name in workers[kills:2 * kills]:
                task = rt.tasks[name]
                lat.setdefault("agent (node's Engine)", []).append(
                    timed_kill(lambda n: rt._agent(rt.tasks[n], "kill"), name, task.pid))
                await asyncio.sleep(0.2)
            result["clocks_start"] = rt.clocks["start"]
        result["kills"] = lat
        t1 = time.monotonic()
    result["down"] = time.monotonic() - t1
    if isinstance(rt, SwarmRuntime):
        result["clocks_end"] = rt.clocks["end"]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design", default="centralised")
    ap.add_argument("--kills", type=int, default=4, help="kills per path")
    ap.add_argument("--rounds", type=int, default=2, help="bring-ups per runtime")
    ap.add_argument("--init", action="store_true", help="init a one-node swarm if there is none, leave it after")
    args = ap.parse_args()
    ok, why = image.available()
    if not ok:
        print(f"bench_swarm: skipped: {why}")
        return 0
    state = engine.client().info()["Swarm"]["LocalNodeState"]
    if state != "active" and not args.init:
        print(f"bench_swarm: skipped: the Engine is in no swarm ({state}); --init makes a one-node one")
        return 0
    had_gwbridge = any(n["Name"] == "docker_gwbridge" for n in engine.client().api.networks())
    if state == "inactive":
        engine.client().swarm.init(advertise_addr="127.0.0.1")
    try:
        image.build(say=lambda _m: None)
        results: dict[str, list[dict[str, object]]] = {}
        with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp:
            for _ in range(args.rounds):
                for runtime in ("docker", "swarm"):
                    results.setdefault(runtime, []).append(asyncio.run(one(runtime, args.design, Path(tmp),
                                                                           args.kills)))
    finally:
        if state == "inactive":
            engine.client().swarm.leave(force=True)
            if not had_gwbridge:  # `swarm init` made it; `swarm leave` leaves it
                engine.client().api.remove_network("docker_gwbridge")
    print(f"{args.design}, {args.rounds} bring-ups per runtime ({why})")
    print(f"{'runtime':<8} {'bring-up':>16} {'down':>14}")
    for runtime, rows in results.items():
        ups = [float(r["bring_up"]) for r in rows]  # type: ignore[arg-type]
        downs = [float(r["down"]) for r in rows]  # type: ignore[arg-type]
        print(f"{runtime:<8} {min(ups):>6.2f}-{max(ups):<6.2f} s {min(downs):>5.2f}-{max(downs):<5.2f} s")
    print(f"\n{'runtime':<8} {'kill path':<22} {'n':>3} {'gone median':>12} {'gone max':>9} {'call median':>12}")
    for runtime, rows in results.items():
        paths: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            for path, values in r["kills"].items():  # type: ignore[attr-defined]
                paths.setdefault(path, []).extend(values)
        for path, values in paths.items():
            calls, gones = [c for c, _ in values], [g for _, g in values]
            print(f"{runtime:<8} {path:<22} {len(values):>3} {statistics.median(gones):>10.2f}ms {max(gones):>7.2f}ms "
                  f"{statistics.median(calls):>10.2f}ms")
    print("\nclock offsets (swarm; docker: one host, one clock, 0 by construction)")
    for r in results.get("swarm", []):
        for phase in ("clocks_start", "clocks_end"):
            for c in r.get(phase, []):  # type: ignore[attr-defined]
                print(f"  {phase[7:]:<5} node {c['node']}: offset {c['offset'] * 1e3:+.3f} ms, "
                      f"uncertainty +-{c['uncertainty'] * 1e3:.3f} ms, wall {c['wall_offset'] * 1e3:+.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
