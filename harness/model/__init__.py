"""The paper's analytic model (Eqs 1-10) as pure functions: the yardstick every measurement is held against.

Every ambiguity of the printed equations is resolved twice, selected by `z.model_reading`:
`corrected` (default) counts what actually happens on the wire and in the workflow, `literal` evaluates the
equation as printed. docs/model.md explains each decision next to the equation it concerns.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from harness.model import registry
from harness.plan.config import Design, Experiment

METRICS = registry.PAPER  # the fields of Metrics below (tests/test_model.py holds them to it)
COMPARED = registry.COMPARED  # measured beside the model in every run


@dataclass(frozen=True)
class Metrics:
    """Modelled figures of one configuration, in paper units (s, kB/s, instance counts)."""

    design: str
    mechanism: str
    t_m: float
    t_c: float
    t_l: float
    t_r: float
    R_a: float
    R_r: float
    B_op: float
    B_rel: float
    B_tot: float
    Q_r: float
    C: float | None = None

    def as_row(self) -> dict[str, float | str | None]:
        return asdict(self)


# --- building blocks ------------------------------------------------------------------------------------


def task_durations(z: Experiment) -> list[float]:
    """t_1 .. t_n: from t_m split evenly over n (the way Figs 7 and 8 vary n) or as configured."""
    return z.per_task("t_i")


def t_m(z: Experiment) -> float:
    """Monolith workflow time: the sum of the task times, no network, no orchestration."""
    return sum(task_durations(z))


def share_points(n: int, s_o: int, s_p: int) -> list[int]:
    """Tasks after which the processing SLM shares its state: s_o, s_o + s_p, ... while tasks remain.

    A share after the last task would protect nothing (the workflow is complete), so it is not made; the
    peers are told the workflow is done instead (a p_c-sized message).
    """
    return list(range(s_o, n, s_p))


def literal_share_count(n: int, s_o: int, s_p: int) -> int:
    """Eq 4's count of share events as printed: 1 + trunc((n - s_o) / s_p)."""
    return 1 + (n - s_o) // s_p


def unshared_runs(n: int, points: list[int]) -> list[range]:
    """Runs of consecutive tasks (1-based) whose work a crash before the next share would lose."""
    bounds = [0, *points, n]
    return [range(a + 1, b + 1) for a, b in itertools.pairwise(bounds) if b > a]


def centralised_task_costs(z: Experiment) -> list[float]:
    """Per task: t_k + l_{k,a} + l_{k,b} + t_o, the time one task adds to a centralised workflow."""
    return [t + a + b + z.t_o for t, a, b in zip(task_durations(z), z.per_task("l_a"), z.per_task("l_b"), strict=True)]


def centralised_lost_work(z: Experiment) -> float:
    """Eq 3's last term: the worst-case work a survivor redoes after the processing SLM crashes."""
    costs = centralised_task_costs(z)
    if z.mechanism == "restart":
        return sum(costs)  # a survivor restarts from task 1: the worst crash is right before completion
    if z.model_reading == "literal":
        # max over j in [s_p, n] of sum_{k=j-s_p-1}^{j}: indexes below 1 do not exist and add nothing.
        # s_p > n leaves [s_p, n] empty; j = n (every task lost) continues s_p = n.
        return max(sum(costs[max(1, j - z.s_p - 1) - 1 : j]) for j in range(min(z.s_p, z.n), z.n + 1))
    runs = unshared_runs(z.n, share_points(z.n, z.s_o, z.s_p))
    return max(sum(costs[k - 1] for k in run) for run in runs)


# --- designs --------------------------------------------------------------------------------------------


def centralised_t_c(z: Experiment) -> float:
    """Eq 2: t_c = sum t_i + (n + 1) t_o + sum (l_{i,a} + l_{i,b})."""
    latency = sum(z.per_task("l_a")) + sum(z.per_task("l_b"))
    return sum(task_durations(z)) + (z.n + 1) * z.t_o + latency


def centralised_b_rel(z: Experiment, t_c: float) -> float:
    """Eq 4: heartbeats of the SLMs (and h_m of the other services) plus the state shares per workflow."""
    if z.model_reading == "literal":
        shares = 0 if z.mechanism == "restart" else literal_share_count(z.n, z.s_o, z.s_p)
        return z.h_m + z.h_s * z.h_r + z.s_z / t_c * shares
    shares = 0 if z.mechanism == "restart" else len(share_points(z.n, z.s_o, z.s_p))
    heartbeats = z.k * (z.k - 1) * z.h_s * z.h_r  # every SLM heartbeats every other SLM
    per_workflow = (z.k - 1) * (z.s_z * shares + z.p_c)  # shares and a 'done' to each peer
    return z.h_m + heartbeats + per_workflow / t_c


def t_h(z: Experiment) -> float:
    """The heartbeat time-out: validation always sets it (from t_h, t_h_mult or 3 / h_r)."""
    assert z.t_h is not None
    return z.t_h


def centralised(z: Experiment) -> Metrics:
    """Eqs 2-5 for an SLM delegating to n microservices, with k >= 2 SLMs."""
    tm = t_m(z)
    tc = centralised_t_c(z)
    tl = z.l_hb + t_h(z) + centralised_lost_work(z)
    b_op = (sum(z.per_task("P_a")) + sum(z.per_task("P_b"))) / tc  # Eq 5
    b_rel = centralised_b_rel(z, tc)
    return _metrics(z, tm, tc, tl, b_op, b_rel, q_r=z.n + z.k - 1)


def distributed_t_c(z: Experiment) -> float:
    """Eq 6: t_c = sum t_i + sum_{i=0}^{n-1} l_{i,i+1}."""
    return sum(task_durations(z)) + sum(z.per_task("l"))


def distributed(z: Experiment) -> Metrics:
    """Eqs 6-9 for a chain of n duplicated modules."""
    tm = t_m(z)
    tc = distributed_t_c(z)
    tl = max(z.l_hb + t_h(z) + t for t in task_durations(z))  # Eq 7, one h_r, t_h, l_hb for every module
    state = sum(z.per_task("P"))
    b_op = state / tc  # Eq 9
    pairs = z.n if z.model_reading == "literal" else 2 * z.n  # both twins heartbeat each other
    b_rel = pairs * z.h_s * z.h_r + (state + z.n * z.p_c) / tc  # Eq 8
    return _metrics(z, tm, tc, tl, b_op, b_rel, q_r=2 * z.n - 1)


def monolith(z: Experiment) -> Metrics:
    """One process, no network and no reliability mechanism: t_c = t_m and a crash loses the request."""
    tm = t_m(z)
    return _metrics(z, tm, tm, math.nan, 0.0, 0.0, q_r=0)


def _metrics(z: Experiment, tm: float, tc: float, tl: float, b_op: float, b_rel: float, q_r: float) -> Metrics:
    tr = tc + tl  # t_r = t_c + t_l (section V-A)
    r_a, r_r = tc / tm, tr / tc  # Eq 1
    b_tot = b_op + b_rel
    return Metrics(
        design=z.design,
        mechanism=z.mechanism,
        t_m=tm,
        t_c=tc,
        t_l=tl,
        t_r=tr,
        R_a=r_a,
        R_r=r_r,
        B_op=b_op,
        B_rel=b_rel,
        B_tot=b_tot,
        Q_r=float(q_r),
        C=cost(z.weights, r_a, r_r, b_tot, q_r) if z.weights else None,
    )


def cost(weights: tuple[float, float, float, float], r_a: float, r_r: float, b_tot: float, q_r: float) -> float:
    """Eq 10: C(z) = alpha R_a + beta R_r + gamma B_tot + delta Q_r.

    A term whose weight is 0 is left out, so a metric the design does not have (the monolith's R_r is NaN)
    does not make C NaN when the operator does not weigh it.
    """
    terms = zip(weights, (r_a, r_r, b_tot, q_r), strict=True)
    return sum((w * value for w, value in terms if w != 0), 0.0)


EQUATIONS: dict[Design, Callable[[Experiment], Metrics]] = {
    "monolith": monolith, "centralised": centralised, "distributed": distributed}
"""The model of each design of harness.plan.config.DESIGNS (tests/test_model.py holds the keys to it)."""


def evaluate(z: Experiment) -> Metrics:
    """The modelled metrics of configuration z for its design."""
    return EQUATIONS[z.design](z)


def workflow_timeout(z: Experiment) -> float:
    """Wall seconds one workflow may take before it counts as timed out: 60 s plus ten modelled workflows.

    One formula for every reader (the run's load and warm-up, Locust, the monolith reference), so a slow design
    is never judged timed out by one of them and waited for by another."""
    return 60 + 10 * evaluate(z).t_c * z.time_scale
