"""A sweep: many experiments z, each run R times, into one folder that can be stopped and resumed.

The spec (its keys, its checks: spec.py) names a base configuration and the points to run. Every point is
validated (it must build a valid Experiment) before anything runs. Each trial (point, k) runs
`harness.experiment.run.experiment` in its own child process (trial.py: own loopback block, own teardown) into
DIR/trials/<point>-r<k>/ on the runtime its z names (`runtime: docker` in `base` runs the whole sweep in
containers, with the same files), and once it has finished its summary row is appended to DIR/trials.csv. A trial
counts as finished only once that row is written: rerunning the same command skips those, removes any half-done
trial folder and runs it again (folder.py). DIR/sweep.yaml holds the spec, the points and the machine/commit of
every session that worked on the sweep; an explored point's classes are in its `exploration`.

The defaults are the fast path: the builtin load and as many trials at once as the CPU headroom admits
(admission.py), bounded by `auto_jobs`; the runner (runner.py) schedules them. `--load locust` and `--jobs 1` on
request, or the spec's own `load:` and `jobs:`; the command line wins over the spec, the spec over the folder it
resumes, and that over the defaults. What `harness sweep` shows, and its exit codes, are the command line's
(harness/cli/sweep_progress.py).

The rooms:

| module | what |
|---|---|
| spec.py | the spec's keys, `read_spec`, `plan` (points, trials, every z validated) |
| folder.py | sweep.yaml and trials.csv: `prepare` (create or reopen), `TrialsCsv`, `read_rows`, `resolve_run` |
| admission.py | machine-wide CPU admission of concurrent trials (`Headroom`, the board under the state root) |
| runner.py | `Runner`: starts, watches, times out and records the trials |
| trial.py | one trial's child process (`python -m harness.experiment.sweep.trial DIR PARENT_PID`) |
"""

from harness.experiment.sweep.admission import HEAVY, Headroom, Watched, auto_jobs, cpu_cap
from harness.experiment.sweep.folder import TrialsCsv, prepare, read_rows, recorded_load, resolve_run
from harness.experiment.sweep.runner import Outcome, Runner, expected_seconds, trial_timeout
from harness.experiment.sweep.spec import AUTO, Plan, Point, Trial, plan, read_spec

__all__ = ["AUTO", "HEAVY", "Headroom", "Outcome", "Plan", "Point", "Runner", "Trial", "TrialsCsv", "Watched",
           "auto_jobs", "cpu_cap", "expected_seconds", "plan", "prepare", "read_rows", "read_spec",
           "recorded_load", "resolve_run", "trial_timeout"]
