"""Docker runtime: image check time (warm), bring-up time of each design, teardown time, what sampling
per-container statistics costs, and the latency of the crash and the freeze by each path.

    .venv/bin/python benchmarks/bench_docker.py [--designs monolith,centralised,distributed] [--kills 6]

- bring-up: `Testbed` enter (leftover check, image check, network, collector, proxies, containers created and
  started through the Docker SDK from the run's compose document, every /health); start: create + start of
  every container; ready: start until every /health answers.
- stats: the harness-side CPU time of one `Container.sample()` per container (cgroup CPU, memory, veth counters
  and the process's own counters: a few file reads), against the Engine's stats (`containers/<id>/stats`,
  one-shot, through the SDK) of the same containers, which is what the sampler replaces.
- kill latency: fault decided -> `kill()` returned (call) and -> the service's process is gone (gone: its
  pidfd becomes readable), for the direct SIGKILL (the default), the Engine's kill through the SDK
  ($MANOBENCH_DOCKER_KILL=docker) and, for reference, the `docker kill` CLI the runtime used before.
- pause latency: writing the cgroup freezer (the default) against the Engine's pause through the SDK.

Before the move to the SDK (compose CLI for bring-up, `docker` CLI for the rest), on this machine (2 cores,
Engine 20.10): bring-up monolith 1.24 s (compose up 0.82), centralised (8 containers) 3.28 s (2.13),
distributed (12) 5.03 s (3.18); down 0.64 / 1.35 / 1.66 s; kill, fault decided -> process gone: direct
SIGKILL median 3.6 ms (call 0.4 ms), `docker kill` CLI 107 ms (the CLI returns after the process is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.experiment.testbed import Testbed
from harness.plan import config
from harness.runtime import docker as docker_runtime
from harness.runtime import engine, image


async def one(design: str, tmp: Path) -> dict[str, float]:
    z = config.build({"runtime": "docker", "design": design})
    t0 = time.monotonic()
    tb = Testbed(z, tmp / design, links_backend="proxy" if design != "monolith" else None)
    async with tb:
        up = time.monotonic() - t0
        rt = tb.runtime
        assert isinstance(rt, docker_runtime.DockerRuntime)
        containers = list(rt.containers.values())
        rounds = 200
        c0 = time.process_time()
        for _ in range(rounds):
            for c in containers:
                c.sample()
        per_sample = (time.process_time() - c0) / rounds / len(containers)
        w0 = time.monotonic()
        api = engine.client().api
        for c in containers:
            api.stats(c.id, stream=False, one_shot=True)
        engine_stats = (time.monotonic() - w0) / len(containers)
    return {"containers": len(containers), "bring_up": up, "start": rt.timings["start"], "ready": rt.timings["ready"],
            "down": rt.timings["down"], "sample_us": per_sample * 1e6,
            "sampler_share": per_sample * len(containers) / rt.stats_interval, "engine_stats_ms": engine_stats * 1e3}


def timed_kill(kill: Callable[[str], None], name: str, pid: int) -> tuple[float, float]:
    """(call, gone) in ms: the kill runs in a thread while this one waits on the process's pidfd, so a call
    that returns only after the process has died (the Engine's kill waits for the exit) does not hide when."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    returned: list[float] = []

    def call() -> None:
        kill(name)
        returned.append(time.perf_counter())

    thread = threading.Thread(target=call)
    t0 = time.perf_counter()
    thread.start()
    poller.poll(5000)
    gone = time.perf_counter()
    thread.join()
    os.close(pidfd)
    return (returned[0] - t0) * 1e3, (gone - t0) * 1e3


async def latencies(tmp: Path, per_path: int) -> dict[str, list[tuple[float, float]]]:
    """(call, gone) in ms per kill path, and (call, call) per pause path, on one centralised deployment's workers."""
    z = config.build({"runtime": "docker", "design": "centralised", "n": 3 * per_path})
    out: dict[str, list[tuple[float, float]]] = {}
    async with Testbed(z, tmp / "kills") as tb:
        rt = tb.runtime
        assert isinstance(rt, docker_runtime.DockerRuntime)
        workers = iter(sorted((s for s in rt.containers if s.startswith("m")), key=lambda s: int(s[1:])))
        cli = shutil.which("docker")

        def by_cli(name: str) -> None:
            subprocess.run([cli or "docker", "kill", "--signal", "KILL", rt.containers[name].id], capture_output=True,
                           check=False)

        paths: dict[str, Callable[[str], None]] = {"direct SIGKILL": rt.kill, "Engine kill (SDK)": rt.kill}
        if cli:
            paths["docker kill (CLI)"] = by_cli
        for path, kill in paths.items():
            if path.startswith("Engine"):
                os.environ[docker_runtime.KILL_ENV] = "docker"
            for name in [next(workers) for _ in range(per_path)]:
                out.setdefault(path, []).append(timed_kill(kill, name, rt.containers[name].pid))
                await asyncio.sleep(0.2)
            os.environ.pop(docker_runtime.KILL_ENV, None)
        api = engine.client().api
        target = rt.containers["slm-b"]
        for path, freeze, thaw in (
                ("freezer write", lambda: rt.pause("slm-b"), lambda: rt.resume("slm-b")),
                ("Engine pause (SDK)", lambda: api.pause(target.id), lambda: api.unpause(target.id))):
            for _ in range(per_path):
                t0 = time.perf_counter()
                freeze()
                call = (time.perf_counter() - t0) * 1e3
                out.setdefault(path, []).append((call, call))
                thaw()
                await asyncio.sleep(0.1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default="monolith,centralised,distributed")
    ap.add_argument("--kills", type=int, default=6, help="kills (and pauses) per path")
    ap.add_argument("--parallel", type=int, default=docker_runtime.PARALLEL, help="containers started at once")
    args = ap.parse_args()
    ok, why = image.available()
    if not ok:
        print(f"bench_docker: skipped: {why}")
        return 0
    docker_runtime.PARALLEL = args.parallel
    t0 = time.monotonic()
    info = image.build(say=print)
    print(f"image: {info.describe()} ({time.monotonic() - t0:.2f} s); {why}; {args.parallel} containers at once")
    print(f"{'design':<12} {'ctrs':>4} {'bring-up':>9} {'start':>7} {'ready':>7} {'down':>6} "
          f"{'sample/ctr':>11} {'sampler CPU':>11} {'Engine stats/ctr':>16}")
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        for design in args.designs.split(","):
            r = asyncio.run(one(design, Path(tmp)))
            print(f"{design:<12} {r['containers']:>4} {r['bring_up']:>8.2f}s {r['start']:>6.2f}s "
                  f"{r['ready']:>6.2f}s {r['down']:>5.2f}s {r['sample_us']:>9.0f}us {100 * r['sampler_share']:>10.2f}% "
                  f"{r['engine_stats_ms']:>14.1f}ms")
        lat = asyncio.run(latencies(Path(tmp), args.kills))
    print("sampler CPU: share of one core spent sampling every container each 0.5 s")
    print(f"\n{'fault path':<20} {'n':>3} {'call median':>12} {'call max':>9} {'gone median':>12} {'gone max':>9}")
    for path, rows in lat.items():
        calls, gones = [c for c, _ in rows], [g for _, g in rows]
        gone = (f"{statistics.median(gones):>10.2f}ms {max(gones):>7.2f}ms" if "kill" in path.lower()
                else f"{'':>12} {'':>9}")
        print(f"{path:<20} {len(rows):>3} {statistics.median(calls):>10.2f}ms {max(calls):>7.2f}ms {gone}")
    print("kill: fault decided -> kill() returned (call), -> the service's process is gone (gone, by pidfd); "
          "pause: fault decided -> frozen")
    return 0


if __name__ == "__main__":
    sys.exit(main())
