"""Benchmark: one default `harness run` (centralised, slm-crash at the worst moment): measured beside
modelled for every metric, what the harness itself costs (its CPU share, the load generator's and the
link proxies'), and what settling and warm-up before the measured load took (harness/experiment/warmup.py).

    python benchmarks/bench_run.py [--load locust|builtin] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import tempfile
import time
from pathlib import Path

from harness.cli.progress import summary_table
from harness.experiment.run import experiment
from harness.plan import config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", default="locust", choices=("locust", "builtin"))
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    z = config.load(None, ["fault=slm-crash", *args.sets])
    out = Path(tempfile.mkdtemp(prefix="bench-run-")) / "run"
    started = time.monotonic()
    result = asyncio.run(experiment(z, out, load=args.load))
    wall = time.monotonic() - started
    print(summary_table(result.summary))
    with (out / "cpu.csv").open() as fh:
        cpu = {row["service"]: (row["role"], float(row["total_s"])) for row in csv.DictReader(fh)}
    services = sum(s for role, s in cpu.values() if role != "harness")
    support = {name: s for name, (role, s) in cpu.items() if role == "harness"}
    print(f"run wall time {wall:.1f} s; harness process CPU share {result.summary['harness_cpu_share']:.1%} "
          f"of one core; MANO services {services:.2f} CPU s; "
          + ", ".join(f"{name} {s:.2f} CPU s" for name, s in sorted(support.items())))
    start = next((e for e in result.events if e["kind"] == "load_start"), None)
    if start:
        print(f"before the load: {start['waited']:.1f} s settling and warming up ({start['warmup_completed']}/"
              f"{start['warmup']} warm-up workflows, {start['suspicions_before']} suspicions, quiet: "
              f"{start['quiet']}); false suspicions during the load: {result.summary['false_suspicions']}")
    v = result.verdict
    print(f"verdict: {v.completed}/{v.requests} completed, lost {len(v.lost)}, duplicated {len(v.duplicated)}; "
          f"results in {out}")


if __name__ == "__main__":
    main()
