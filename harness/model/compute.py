"""Q_r in compute: the extra compute of a design relative to the monolith, in monolith-equivalents, predicted
from z (this project's extension of the paper's Q_r, which counts instances; docs/model.md "Q_r in compute").

    Q_r_compute = (W_d + O_d) / (W_m + O_m) - 1      per workflow, wall CPU-seconds at the run's time scale

- W: the emulated work of one workflow, the compute its tasks stand for, as configured (`work_per_workflow`):
  the monolith's t_m; the centralised design's t_m and (n + 1) t_o of orchestration; the distributed
  design's t_m. The same whether the emulation burns it (`work: burn`) or sleeps it. Work a crash makes the
  survivors redo is recovery (R_r's), not a standing cost, and is not in W.
- O: the services' own CPU beyond the work they burnt (HTTP, JSON, heartbeats, state shares, logging,
  'done', the event loop, the redone tasks' calls). Measured: cpu.csv less the emulated work burnt
  (harness.measure.metrics.overhead_cpu). Modelled: the fitted per-event costs (`CpuCosts`,
  harness.analysis.fit's `cpu.*`) times the activity the model expects of a trial (`activity`): message
  events, heartbeats, instance-seconds, services.

A trial is what `harness run` measures: `requests` workflows from `users` closed-loop users, CPU counted
from the start of the measured load, a crash (`slm-crash`) in the workflow at index min(requests, users + 1)
at the model's worst moment. After it the victim is gone: the centralised design runs on with k - 1 SLMs
(no shares or 'done' to a dead peer, one heartbeat stream fewer per survivor), the distributed one with the
victim's twin alone. Other faults kill no instance: every instance stays up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.model import tasks
from harness.plan.config import Experiment


@dataclass(frozen=True)
class CpuCosts:
    """Wall CPU-seconds a MANO service spends per unit of activity (fitted: harness.analysis.fit.cpu_fit)."""

    per_message: float  # per message event it handled (a call, reply, task, forward, share or 'done')
    per_heartbeat: float  # per heartbeat it sent, and as many again for those it received
    per_second: float  # per wall second it was up during the measured load: timers, the event loop
    per_service: float = 0.0  # per service and trial


@dataclass(frozen=True)
class Activity:
    """What the model expects one trial's MANO services to do during the measured load (wall seconds)."""

    messages: float
    heartbeats: float
    up: float  # instance-seconds
    services: float
    work: float  # wall CPU-seconds of emulated work, W of each workflow
    window: float  # wall seconds from load start to the end of the CPU count
    crash: float  # wall seconds from load start to the crash (= window without one)

    def overhead(self, c: CpuCosts) -> float:
        return c.per_message * self.messages + c.per_heartbeat * self.heartbeats + c.per_second * self.up \
            + c.per_service * self.services


# the history's events that the CPU fit counts as messages a service handled (harness.analysis.fit)
MESSAGE_KINDS = ("task_call", "task_reply", "task_start", "task_end", "request_received", "forward_sent",
                 "state_share_sent", "state_share_received", "done_sent", "done_received")
KILLS = ("slm-crash",)  # faults that end an instance for the rest of the run


def services(z: Experiment) -> int:
    """MANO service instances of z's deployment (the harness, proxies and load are not)."""
    if z.design == "centralised":
        return z.k + z.n * (z.worker_replicas or 1)
    return 2 * z.n if z.design == "distributed" else 1


def _crash_at(z: Experiment) -> float:
    """Where in its workflow the crash strikes, as paper seconds from the workflow's start: the end of the
    longest unshared run (centralised) or of the longest task (distributed), Eqs 3 and 7."""
    t_i = tasks.task_durations(z)
    if z.design == "centralised":
        costs = tasks.centralised_task_costs(z)
        runs = [range(1, z.n + 1)] if z.mechanism == "restart" else \
            tasks.unshared_runs(z.n, tasks.share_points(z.n, z.s_o, z.s_p))
        worst = max(runs, key=lambda run: sum(costs[k - 1] for k in run))
        return sum(costs[: worst[-1]])
    hops = z.per_task("l")
    j = max(range(z.n), key=lambda i: t_i[i])
    return sum(t_i[: j + 1]) + sum(hops[: j + 1])


def redone_tasks(z: Experiment) -> float:
    """Tasks a crash makes the survivors redo (their calls are overhead, their work is recovery): the worst
    run of the target workflow, and as much of each other workflow the victim drove. A closed loop's users
    start a round together, so their workflows move in step: each of the other users - 1 is at the same task,
    and the victim drives it with probability 1 / k (its SLMs share the requests) or 1 / 2 (a module's twins)."""
    if z.fault not in KILLS or z.design == "monolith":
        return 0.0
    others = max(0, min(z.requests, z.users) - 1)
    if z.design == "distributed":
        return 1 + others / 2
    costs = tasks.centralised_task_costs(z)
    runs = [range(1, z.n + 1)] if z.mechanism == "restart" else \
        tasks.unshared_runs(z.n, tasks.share_points(z.n, z.s_o, z.s_p))
    worst = max(runs, key=lambda run: sum(costs[k - 1] for k in run))
    return len(worst) * (1 + others / z.k)


def work_per_workflow(z: Experiment) -> float:
    """W: paper seconds of emulated work of one workflow, as configured: the tasks and the orchestrator's
    (n + 1) steps (centralised)."""
    return tasks.t_m(z) + ((z.n + 1) * z.t_o if z.design == "centralised" else 0.0)


def _messages(z: Experiment, alive: int) -> float:
    """Message events per workflow with `alive` SLMs (centralised) or both twins of every module alive
    (distributed, alive = 2) or one module's twin gone (alive = 1)."""
    n = z.n
    if z.design == "centralised":
        shares = 0 if z.mechanism == "restart" else len(tasks.share_points(n, z.s_o, z.s_p))
        # every SLM receives the request; call, reply at the SLM, start, end at the worker per task; each share
        # and the 'done' sent to, and received by, every live peer
        return alive + 4 * n + 2 * (alive - 1) * (shares + 1)
    if z.design == "distributed":
        # both instances of every module receive the request; the owner starts and ends its task, forwards to
        # both instances of the next module and tells its twin 'done', which the twin receives
        full = 2 * n + 2 * n + 2 * (n - 1) + 2 * n
        return full if alive == 2 else full - 4  # the victim receives, and is told, nothing
    return 1 + 2 * n  # the monolith: the request, and each task's start and end


def activity(z: Experiment, t_c: float, t_r: float) -> Activity:
    """The model's activity of a trial of z, given its workflow times t_c and t_r (paper seconds: the fitted
    model's, so the per-message software cost is in them)."""
    ts, requests, users = z.time_scale, z.requests, max(1, z.users)
    rounds = math.ceil(requests / users)
    kills = z.fault in KILLS and z.design != "monolith"
    recovery = (t_r - t_c) * ts if kills and math.isfinite(t_r) else 0.0
    window = rounds * t_c * ts + recovery + max(0.2, 3 * ts * (z.t_h or 0.0))  # + the wait for late duplicates
    # the target workflow starts when the first round ends (closed loop), the crash at its worst moment
    crash = min(window, ts * ((t_c if requests > users else 0.0) + _crash_at(z))) if kills else window
    before, after = crash / window, 1 - crash / window
    count = services(z)
    if z.design == "centralised":
        messages = requests * (before * _messages(z, z.k) + after * _messages(z, z.k - 1 if kills else z.k)) \
            + 4 * redone_tasks(z)  # call, reply, start and end again
        senders = (z.k * crash + (z.k - 1) * (window - crash)) if kills else z.k * window
        heartbeats = 2 * z.h_r / ts * (z.k - 1) * senders  # a survivor goes on heartbeating the dead peer
    elif z.design == "distributed":
        messages = requests * (before * _messages(z, 2) + after * _messages(z, 1 if kills else 2)) \
            + 4 * redone_tasks(z)  # start, end, and the forwards again
        heartbeats = 2 * z.h_r / ts * (2 * z.n * crash + (2 * z.n - 1) * (window - crash))
    else:
        messages, heartbeats = requests * _messages(z, 1), 0.0
    up = count * window - (window - crash)
    work = requests * work_per_workflow(z) * ts
    return Activity(messages, heartbeats, up, count, work, window, crash)


def monolith_activity(z: Experiment) -> Activity:
    """The monolith reference's activity for the same tasks (harness.experiment.run.monolith_reference:
    min(requests, 2 users) workflows, no fault)."""
    zm = z.model_copy(update={"design": "monolith", "fault": "none", "requests": min(z.requests, 2 * z.users)})
    t_m = tasks.t_m(zm)
    return activity(zm, t_m, math.nan)


def q_r_compute(z: Experiment, costs: CpuCosts, t_c: float, t_r: float) -> float:
    """Q_r in monolith-equivalents of compute (module docstring), predicted for z with the fitted CPU costs
    and the workflow times t_c and t_r."""
    if z.design == "monolith":
        return 0.0
    mine, mono = activity(z, t_c, t_r), monolith_activity(z)
    per_design = (mine.work + mine.overhead(costs)) / max(1, z.requests)
    per_monolith = (mono.work + mono.overhead(costs)) / max(1, min(z.requests, 2 * z.users))
    return per_design / per_monolith - 1
