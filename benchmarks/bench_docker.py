"""Docker runtime: image build time (warm), bring-up time of each design (compose up until every container's
/health answers), teardown time, and what sampling per-container statistics costs.

    .venv/bin/python benchmarks/bench_docker.py [--designs monolith,centralised,distributed]

The stats overhead is the harness-side CPU time of one `Container.sample()` (cgroup CPU, memory, veth
counters and the process's own counters: a few file reads), per container, against one `docker stats
--no-stream` call for the same containers, which is what the sampler replaces.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import config, image
from harness.testbed import Testbed


async def one(design: str, tmp: Path) -> dict[str, float]:
    z = config.build({"runtime": "docker", "design": design})
    t0 = time.monotonic()
    tb = Testbed(z, tmp / design, proxies=design != "monolith")
    async with tb:
        up = time.monotonic() - t0
        rt = tb.runtime
        containers = list(rt.containers.values())
        rounds = 200
        c0 = time.process_time()
        for _ in range(rounds):
            for c in containers:
                c.sample()
        per_sample = (time.process_time() - c0) / rounds / len(containers)
        w0 = time.monotonic()
        subprocess.run(["docker", "stats", "--no-stream", *[c.id for c in containers]], capture_output=True,
                       check=False)
        docker_stats = time.monotonic() - w0
        timings = dict(rt.timings)
    return {"containers": len(containers), "bring_up": up, "compose_up": timings["compose_up"],
            "ready": timings["ready"], "down": rt.timings["down"], "sample_us": per_sample * 1e6,
            "sampler_share": per_sample * len(containers) / rt.stats_interval, "docker_stats_s": docker_stats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default="monolith,centralised,distributed")
    args = ap.parse_args()
    ok, why = image.available()
    if not ok:
        print(f"bench_docker: skipped: {why}")
        return 0
    t0 = time.monotonic()
    info = image.build(say=print)
    print(f"image: {info.describe()} ({time.monotonic() - t0:.2f} s)")
    print(f"{'design':<12} {'ctrs':>4} {'bring-up':>9} {'compose up':>10} {'ready':>7} {'down':>6} "
          f"{'sample/ctr':>11} {'sampler CPU':>11} {'docker stats':>12}")
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        for design in args.designs.split(","):
            r = asyncio.run(one(design, Path(tmp)))
            print(f"{design:<12} {r['containers']:>4} {r['bring_up']:>8.2f}s {r['compose_up']:>9.2f}s "
                  f"{r['ready']:>6.2f}s {r['down']:>5.2f}s {r['sample_us']:>9.0f}us {100 * r['sampler_share']:>10.2f}% "
                  f"{r['docker_stats_s']:>11.2f}s")
    print("bring-up: Testbed enter (image check, network, collector, proxies, compose up, every /health); "
          "ready: compose up until all /health answer;\nsampler CPU: share of one core spent sampling every "
          "container each 0.5 s; docker stats: one `docker stats --no-stream` of the same containers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
