"""Benchmark: how long the paper's figures take to reproduce, what CPU that uses, and whether running trials
side by side moves the figures.

    python benchmarks/bench_sweep.py [--spec SPEC] [--load builtin|locust] [--jobs J] [--keep]  # fig6-ci.yaml
    python benchmarks/bench_sweep.py --full [--repeat 5] [--jobs J]   # fig6 + fig7 + fig8 at 5 repeats
    python benchmarks/bench_sweep.py --compare [--repeat 5] [--jobs J]  # one point alone vs in a busy sweep

Every sweep runs as a user runs it (`harness sweep` in its own process) into a fresh temporary folder.
`--full` runs the three full specs as three sweeps at once, each admitting up to J concurrent trials by
measured CPU headroom (harness/experiment/sweep/admission.py, Headroom: one admission at a time on the machine), and
prints the wall time, the CPU used (our process trees, and the whole host's, other users' included), the host's
load average, false suspicions, and the model's errors after fitting (`harness fit`). Every mode prints each
sweep's wall seconds and CPU seconds per trial (mean, sd, range: `trial_seconds` in trials.csv and each trial's
`trial_cpu.json`, the trial process and everything it started; the fork servers' one start-up per sweep and per
deployment is in the totals, not in a trial's figure). `--compare` runs one Fig 7
point R times alone (one trial at a time) and R times among five other Fig 7 points at J at a time, and prints
both means with their 95% intervals: the figures must not move beyond them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import yaml

from harness.analysis import tables
from harness.experiment.sweep import plan, read_rows, read_spec

ROOT = Path(__file__).resolve().parents[1]
FULL = ("fig6.yaml", "fig7.yaml", "fig8.yaml")
COMPARED = ("t_c_measured", "R_a_measured", "R_r_measured")
# the Fig 7 point compared alone and in company, and the company (other Fig 7 points, both designs)
ALONE = {"design": "centralised", "s_p": 1, "s_o": 1, "n": 6}
COMPANY = [{"design": "centralised", "s_p": 2, "s_o": 2, "n": 8},
           {"design": "centralised", "s_p": 3, "s_o": 3, "n": 12},
           {"design": "centralised", "s_p": 1, "s_o": 1, "n": 3},
           {"design": "distributed", "n": 6}, {"design": "distributed", "n": 12}]


def start_sweep(spec: Path, out: Path, load: str, jobs: int, repeat: int | None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "harness", "sweep", str(spec), "--out", str(out), "--load", load, "--jobs",
            str(jobs), *(["--repeat", str(repeat)] if repeat else [])]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Meter:
    """Wall time, our children's CPU (every sweep, trial and service reaped under us) and the host's CPU."""

    def __init__(self) -> None:
        self.load = os.getloadavg()
        self.wall = time.monotonic()
        self.ours = self._ours()
        self.host = psutil.cpu_times()

    @staticmethod
    def _ours() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall
        host = psutil.cpu_times()
        busy = sum(getattr(host, f) - getattr(self.host, f) for f in ("user", "system", "nice", "irq", "softirq"))
        cores = psutil.cpu_count() or 1
        return {"wall": wall, "ours": self._ours() - self.ours, "host": busy, "cores": cores,
                "load_before": self.load[0], "load_after": os.getloadavg()[0]}


def say_cpu(m: dict[str, float]) -> None:
    capacity = m["wall"] * m["cores"]
    print(f"wall {m['wall']:.0f} s ({m['wall'] / 60:.1f} min); CPU: ours {m['ours']:.0f} s "
          f"({100 * m['ours'] / capacity:.0f}% of {m['cores']:.0f} cores), whole host {m['host']:.0f} s "
          f"({100 * m['host'] / capacity:.0f}%, other users included); load average "
          f"{m['load_before']:.2f} before, {m['load_after']:.2f} after")


def wait_all(procs: dict[str, subprocess.Popen[str]]) -> None:
    for name, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            print(f"{name}: exit {proc.returncode}: {err[-2000:]}", file=sys.stderr)


def fit_errors(out: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "harness", "fit", str(out)], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return [f"  fit failed: {proc.stderr.strip()[-300:]}"]
    errors = tables.read_csv(out / "model_error.csv")
    return [f"  {r['metric']:6} before mean {100 * r['before_mean']:6.1f}%  after mean {100 * r['after_mean']:6.1f}%"
            f"  after max {100 * r['after_max']:6.1f}%" for r in errors.to_dict("records")]


def spread(values: list[float], unit: str) -> str:
    """mean, sd and range of a list of figures."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} {unit} (sd {sd:.2f}, {min(values):.2f}-{max(values):.2f})"


def trial_cpu(out: Path, trial: str) -> float | None:
    """CPU seconds of one trial's process tree (trial_cpu.json), if it wrote one."""
    try:
        return float(json.loads((out / "trials" / trial / "trial_cpu.json").read_text())["cpu_seconds"])
    except (OSError, ValueError, KeyError):
        return None


def trial_summary(out: Path) -> str:
    rows = read_rows(out / "trials.csv")
    seconds = [float(r["trial_seconds"]) for r in rows]
    cpu = [c for c in (trial_cpu(out, r["trial"]) for r in rows) if c is not None]
    false = sum(int(float(r["false_suspicions"])) for r in rows if r["false_suspicions"] not in ("", "nan"))
    loads = [float(r["host_load"]) for r in rows]
    verdicts = {v: sum(r["verdict"] == v for r in rows) for v in {r["verdict"] for r in rows}}
    return (f"{len(rows)} trials, wall per trial {spread(seconds, 's')}, CPU per trial {spread(cpu, 'CPU s')}, "
            f"false suspicions {false}, lost {sum(int(r['lost']) for r in rows)}, verdicts {verdicts}, host load "
            f"at trial end median {statistics.median(loads):.2f} max {max(loads):.2f}") if rows else "no trials"


def admission(out: Path) -> str:
    """Where the sweep's wall time went (DIR/admission.json: seconds waiting on each admission state)."""
    try:
        info = json.loads((out / "admission.json").read_text())
    except (OSError, ValueError):
        return "no admission.json"
    states = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(info["seconds"].items(), key=lambda kv: -kv[1]))
    return f"wall {info['wall']:.0f} s, {info['mean_running']:.2f} trials running on average; time by state: {states}"


def full(args: argparse.Namespace, work: Path) -> None:
    specs = [ROOT / "experiments" / name for name in FULL]
    planned = {s.name: len(plan(read_spec(s), args.repeat).trials) for s in specs}
    print(f"figs 6+7+8 at {args.repeat} repeats: {sum(planned.values())} trials {planned}, up to {args.jobs} "
          f"concurrent per sweep, load {args.load}; uptime: {os.getloadavg()}")
    meter = Meter()
    procs = {s.name: start_sweep(s, work / s.stem, args.load, args.jobs, args.repeat) for s in specs}
    wait_all(procs)
    m = meter.stop()
    say_cpu(m)
    for s in specs:
        print(f"{s.name}: {trial_summary(work / s.stem)}")
        print(f"  admission: {admission(work / s.stem)}")
        print("\n".join(fit_errors(work / s.stem)))


def compare(args: argparse.Namespace, work: Path) -> None:
    fig7 = read_spec(ROOT / "experiments" / "fig7.yaml")
    base = fig7["base"]
    alone = {"description": "one point alone", "base": base, "points": [ALONE], "repeat": args.repeat}
    busy = {"description": "the same point among others", "base": base, "points": [ALONE, *COMPANY],
            "repeat": args.repeat}
    results: dict[str, Any] = {}
    for name, spec, jobs in (("alone", alone, 1), ("concurrent", busy, args.jobs)):
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        meter = Meter()
        wait_all({name: start_sweep(path, work / name, args.load, jobs, None)})
        m = meter.stop()
        rows = [r for r in read_rows(work / name / "trials.csv") if r["point"] == plan(read_spec(path)).points[0].id]
        stats = tables.over_repeats(pd.DataFrame(rows).assign(p="x"), "p", list(COMPARED))
        results[name] = stats.iloc[0]
        print(f"{name} ({jobs} at a time): {trial_summary(work / name)}")
        say_cpu(m)
    for metric in COMPARED:
        a, c = results["alone"], results["concurrent"]
        lo_a, hi_a, lo_c, hi_c = (a[f"{metric}_ci95_lo"], a[f"{metric}_ci95_hi"], c[f"{metric}_ci95_lo"],
                                  c[f"{metric}_ci95_hi"])
        within = lo_c <= a[f"{metric}_mean"] <= hi_c and lo_a <= c[f"{metric}_mean"] <= hi_a
        print(f"{metric:14} alone {a[f'{metric}_mean']:.4g} [{lo_a:.4g}, {hi_a:.4g}]  concurrent "
              f"{c[f'{metric}_mean']:.4g} [{lo_c:.4g}, {hi_c:.4g}]  "
              f"{'each mean within the other interval' if within else 'OUTSIDE'}")


def one(args: argparse.Namespace, work: Path) -> None:
    spec = Path(args.spec).resolve()
    meter = Meter()
    wait_all({spec.name: start_sweep(spec, work / "sweep", args.load, args.jobs, args.repeat_one)})
    m = meter.stop()
    print(f"sweep {spec.name}, load {args.load}, jobs {args.jobs}: {trial_summary(work / 'sweep')}")
    print(f"  admission: {admission(work / 'sweep')}")
    say_cpu(m)
    rows = read_rows(work / "sweep" / "trials.csv")
    if rows:
        print(f"whole sweep: {m['ours'] / len(rows):.2f} CPU s and {m['wall'] / len(rows):.1f} s of wall time a trial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="fig6 + fig7 + fig8 (the full specs)")
    parser.add_argument("--compare", action="store_true", help="one Fig 7 point alone and in a concurrent sweep")
    parser.add_argument("--spec", default=str(ROOT / "experiments" / "fig6-ci.yaml"),
                        help="the spec the default mode sweeps (default experiments/fig6-ci.yaml)")
    parser.add_argument("--repeat", type=int, default=5, help="repeats a point (--full, --compare)")
    parser.add_argument("--repeat-one", type=int, help="repeats a point in the default mode (default: the spec's)")
    parser.add_argument("--load", default="builtin", choices=("locust", "builtin"))
    parser.add_argument("--jobs", type=int, default=8, help="most trials at once per sweep (by CPU headroom)")
    parser.add_argument("--keep", action="store_true", help="keep the sweep folders (printed) for fit/report")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        (full if args.full else compare if args.compare else one)(args, work)
    finally:
        if args.keep:
            print(f"sweep folders: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
