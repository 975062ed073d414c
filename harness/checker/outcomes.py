"""What became of each request, read from the BSS's and the executors' events: submitted, completed (every
notice), lost, duplicated, its tasks executed and re-executed, its latency, who processed it, the takeovers."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from harness.history import Event


def of_kind(events: Iterable[Event], *kinds: str, svc: str | None = None) -> list[Event]:
    return [e for e in events if e["kind"] in kinds and (svc is None or e["svc"] == svc)]


def submitted(events: Iterable[Event]) -> dict[str, float]:
    """Request -> time the BSS submitted it (first submission)."""
    out: dict[str, float] = {}
    for e in of_kind(events, "submitted", svc="bss"):
        out.setdefault(e["req"], e["t"])
    return out


def completions(events: Iterable[Event]) -> dict[str, list[Event]]:
    """Request -> every completion notice the BSS received for it, in order."""
    out: dict[str, list[Event]] = defaultdict(list)
    for e in of_kind(events, "completed", svc="bss"):
        out[e["req"]].append(e)
    return dict(out)


def lost(events: list[Event]) -> list[str]:
    """Submitted requests the BSS never heard back about."""
    done = completions(events)
    return sorted(r for r in submitted(events) if r not in done)


def duplicated(events: list[Event]) -> dict[str, int]:
    """Requests completed more than once, with how often: never merged, always reported."""
    return {r: len(c) for r, c in completions(events).items() if len(c) > 1}


def executions(events: Iterable[Event]) -> Counter[tuple[str, int]]:
    """(request, task) -> how many times the task started, counted where the work is done."""
    return Counter((e["req"], e["task"]) for e in of_kind(events, "task_start"))


def reexecuted(events: list[Event]) -> dict[tuple[str, int], int]:
    return {key: count for key, count in executions(events).items() if count > 1}


def latencies(events: list[Event]) -> dict[str, float]:
    """Request -> seconds from submission to its first completion notice (wall seconds, unscaled)."""
    sub = submitted(events)
    return {r: c[0]["t"] - sub[r] for r, c in completions(events).items() if r in sub}


def processed_by(events: list[Event]) -> dict[str, set[str]]:
    """Request -> every instance that drove its first task: the SLMs that called it (centralised), else
    whoever ran it (an instance of m_1, or the monolith)."""
    called: dict[str, set[str]] = defaultdict(set)
    ran: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["kind"] == "task_call" and e["task"] == 1:
            called[e["req"]].add(e["svc"])
        elif e["kind"] == "task_start" and e.get("task") == 1:
            ran[e["req"]].add(e["svc"])
    return {req: called.get(req) or ran[req] for req in {*called, *ran}}


def takeovers(events: Iterable[Event]) -> list[Event]:
    return of_kind(events, "takeover")
