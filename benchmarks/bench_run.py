"""Benchmark: one default `harness run` (centralised, slm-crash at the worst moment): measured beside
modelled for every metric, what the harness itself costs (its CPU share, the load generator's and the
link proxies'), what settling and warm-up before the measured load took (harness/experiment/warmup.py),
and, given a fitted sweep (`--fit DIR`), the run's measured Q_r_compute beside the fitted model's prediction
of it from z (harness.model.compute with that sweep's CPU costs and timings): an out-of-sample check.

    python benchmarks/bench_run.py [--load locust|builtin] [--set key=value ...] [--fit SWEEP_DIR]
    python benchmarks/bench_run.py --run RUN_DIR --fit SWEEP_DIR      # an existing run folder, re-analysed
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
from harness.history import record
from harness.measure import summary
from harness.plan import config


def q_r_check(run: Path, sweep: Path) -> None:
    """The run's measured Q_r_compute against the prediction of the model fitted to `sweep`."""
    from harness.analysis import fit

    row = summary.derive(record.load(run)).summary
    the_fit = fit.analyse(sweep)[2].fit
    z = record.load(run).z
    predicted = the_fit.q_r_compute(z)
    measured = float(row["Q_r_compute"])
    print(f"Q_r_compute (extra compute in monolith-equivalents, docs/model.md): measured {measured:.4f}, fitted "
          f"model {predicted:.4f} (fit of {sweep}: {the_fit.cpu_costs}), off {measured / predicted - 1:+.1%}; "
          f"host busy {row['host_busy']:.0%} of {row.get('host_busy_p90', float('nan')):.0%} p90, "
          f"saturated: {row['saturated']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", default="locust", choices=("locust", "builtin"))
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--fit", type=Path, help="a fitted sweep folder: predict the run's Q_r_compute with it")
    parser.add_argument("--run", type=Path, help="an existing run folder instead of a new run (with --fit)")
    args = parser.parse_args()
    if args.run:
        if args.fit:
            q_r_check(args.run, args.fit)
        return
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
    if args.fit:
        q_r_check(out, args.fit)


if __name__ == "__main__":
    main()
