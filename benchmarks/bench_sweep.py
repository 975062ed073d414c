"""Benchmark: the wall time of the Fig 6 sweep (the CI variant by default, the full spec with --full) and the
time per trial, run as a user runs it (`harness sweep` in its own process) into a fresh temporary folder.

    python benchmarks/bench_sweep.py [--full] [--load builtin|locust] [--jobs J] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.experiment.sweep import plan, read_rows, read_spec

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="experiments/fig6.yaml instead of fig6-ci.yaml")
    parser.add_argument("--load", default="builtin", choices=("locust", "builtin"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the sweep folder (printed) for fit/report")
    args = parser.parse_args()
    spec = ROOT / "experiments" / ("fig6.yaml" if args.full else "fig6-ci.yaml")
    planned = len(plan(read_spec(spec)).trials)
    out = Path(tempfile.mkdtemp(prefix="bench-sweep-")) / "sweep"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness.cli.analysis", "sweep", str(spec), "--out", str(out),
                           "--load", args.load, "--jobs", str(args.jobs)], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(proc.returncode)
    rows = read_rows(out / "trials.csv")
    seconds = [float(r["trial_seconds"]) for r in rows]
    print(f"sweep {spec.name}: {len(rows)}/{planned} trials, load {args.load}, jobs {args.jobs}: "
          f"wall {wall:.1f} s ({wall / 60:.1f} min)")
    print(f"per trial: mean {statistics.fmean(seconds):.1f} s, median {statistics.median(seconds):.1f} s, "
          f"min {min(seconds):.1f} s, max {max(seconds):.1f} s (the first trial of a z also measures the monolith "
          "reference)")
    print(f"sweep's own overhead (start-up, validation, scheduling, bookkeeping): {wall - sum(seconds):.1f} s "
          f"({(wall - sum(seconds)) / max(1, len(rows)):.2f} s per trial)")
    if args.keep:
        print(f"sweep folder: {out}  (harness fit / harness report it)")
    else:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
