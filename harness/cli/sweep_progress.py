"""What `harness sweep` shows while it works and how it ends: the plan in one line, a progress bar with ETA, a
line per finished trial, and the exit code (130 interrupted, resumable; 1 a trial failed, rerun to retry; 0 all
finished). The work itself is harness.experiment.sweep's, which reports through callbacks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.experiment.sweep import AUTO, Outcome, Runner, auto_jobs, cpu_cap, plan, prepare, read_spec, resolve_run


def run_sweep(spec_path: str, out: Path, *, repeat: int | None = None, jobs: int | str | None = None,
              load: str | None = None, console: Console | None = None) -> Outcome:
    """`harness sweep`: validate, then run what is left; progress with ETA on stderr (rich). `load` and `jobs`
    None: the spec's, else the defaults (`resolve_run`)."""
    spec = read_spec(spec_path)
    plan_ = plan(spec, repeat)
    load, jobs = resolve_run(spec, out, load, jobs)
    bound = auto_jobs() if jobs == AUTO else int(jobs)
    if bound > 1:
        cpu_cap()  # a bad MANOBENCH_SWEEP_CPU is refused before the folder is made
    console = console or Console(stderr=True, soft_wrap=True)
    prepare(out, plan_, str(spec_path), load, jobs)
    runner = Runner(out, plan_, load, bound, say=lambda m: console.print(m, highlight=False))
    total, todo = len(plan_.trials), len(runner.todo())
    at_once = f"up to {bound} at a time as the CPU admits: --jobs auto" if jobs == AUTO else f"{bound} at a time"
    console.print(f"harness sweep: {len(plan_.points)} points x {plan_.repeat} = {total} trials, "
                  f"{total - todo} already finished, {todo} to run ({at_once}, load {load}) -> {out}",
                  highlight=False)
    with Progress(TextColumn("trials {task.fields[done]}/{task.total:.0f}"), BarColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task("sweep", total=total, done=total - todo)

        def update(completed: float, done: int, _total: int) -> None:
            progress.update(task, completed=completed, done=done)

        runner.on_update = update
        try:
            outcome = asyncio.run(runner.run())
        except KeyboardInterrupt:  # before the signal handlers were in place
            outcome = runner.outcome
            outcome.interrupted = True
    if outcome.interrupted:
        console.print(f"interrupted: {outcome.finished} of {total} trials finished and kept in "
                      f"{out / 'trials.csv'}; resume with the same command: harness sweep {spec_path} "
                      f"--out {out}", highlight=False)
        raise SystemExit(130)
    console.print(f"sweep: {outcome.finished}/{total} trials finished ({outcome.ran} now, {outcome.skipped} before) "
                  f"in {outcome.seconds:.0f} s; results in {out / 'trials.csv'}; next: harness fit {out}, "
                  f"harness report {out}", highlight=False)
    if outcome.failed:
        console.print(f"{len(outcome.failed)} trial(s) failed: {', '.join(outcome.failed)}; rerun the same command "
                      "to retry them", highlight=False)
        raise SystemExit(1)
    return outcome

