"""Eqs 1-10 for each design: the modelled figures (`Metrics`) of a configuration z, its cost C (Eq 10), and
the one workflow time-out every reader of the model uses."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from harness.model import fenced, registry
from harness.model.tasks import centralised_lost_work, literal_share_count, share_points, t_m, task_durations
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
    """Eqs 2-5 for an SLM delegating to n microservices, with k >= 2 SLMs; with `mechanism: fenced` what the
    epoch check and the election add (this project's extension, harness.model.fenced)."""
    tm = t_m(z)
    tc = centralised_t_c(z)
    tl = z.l_hb + t_h(z) + centralised_lost_work(z)
    if z.mechanism == "fenced":
        tc, tl = tc + fenced.t_c_added(z), tl + fenced.t_l_added(z)
    b_op = (sum(z.per_task("P_a")) + sum(z.per_task("P_b"))) / tc  # Eq 5
    b_rel = centralised_b_rel(z, tc) + (fenced.b_rel_added(z, tc) if z.mechanism == "fenced" else 0.0)
    return assemble(z, tm, tc, tl, b_op, b_rel, q_r=z.n + z.k - 1)


def distributed_t_c(z: Experiment) -> float:
    """Eq 6: t_c = sum t_i + sum_{i=0}^{n-1} l_{i,i+1}."""
    return sum(task_durations(z)) + sum(z.per_task("l"))


def distributed(z: Experiment) -> Metrics:
    """Eqs 6-9 for a chain of n duplicated modules; with `mechanism: fenced` what each hop's epoch check, the
    election and the witness add (this project's extension, harness.model.fenced)."""
    tm = t_m(z)
    tc = distributed_t_c(z)
    tl = max(z.l_hb + t_h(z) + t for t in task_durations(z))  # Eq 7, one h_r, t_h, l_hb for every module
    fenced_ = z.mechanism == "fenced"
    if fenced_:
        tc, tl = tc + fenced.distributed_t_c_added(z), tl + fenced.t_l_added(z)
    state = sum(z.per_task("P"))
    b_op = state / tc  # Eq 9
    pairs = z.n if z.model_reading == "literal" else 2 * z.n  # both twins heartbeat each other
    b_rel = pairs * z.h_s * z.h_r + (state + z.n * z.p_c) / tc  # Eq 8
    if fenced_:
        b_rel += fenced.distributed_b_rel_added(z, tc)
    return assemble(z, tm, tc, tl, b_op, b_rel, q_r=2 * z.n - 1 + (fenced.WITNESSES if fenced_ else 0))


def monolith(z: Experiment) -> Metrics:
    """One process, no network and no reliability mechanism: t_c = t_m and a crash loses the request."""
    tm = t_m(z)
    return assemble(z, tm, tm, math.nan, 0.0, 0.0, q_r=0)


def assemble(z: Experiment, tm: float, tc: float, tl: float, b_op: float, b_rel: float, q_r: float) -> Metrics:
    """The Metrics of z from its design's t_m, t_c, t_l, bandwidths and Q_r: the ratios, B_tot and C follow."""
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
