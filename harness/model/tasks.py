"""The workflow's pieces that Eqs 2-9 are built from: the task times, the monolith's t_m, where the processing
SLM shares its state, the runs of tasks a crash before the next share would lose, the time one task adds to a
centralised workflow and the worst-case work a survivor redoes (Eq 3's last term)."""

from __future__ import annotations

import itertools

from harness.plan.config import Experiment


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
