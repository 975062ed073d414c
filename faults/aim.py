"""Where and when a fault strikes, read off the live history.

The target is the `target_index`-th request the BSS submits. Its driver is the instance that processes
it where the fault strikes: the owning SLM (centralised) or the owning instance of module K (distributed).

`worst` follows the model (Eqs 3 and 7): the crash must cost the most work and the longest detection. For
the centralised design that is the end of the longest run of unshared tasks, just before the share that
would have saved it; for the distributed one, the end of the longest task t_i. And it should come right
after a heartbeat, so the survivors wait the full t_h. Both cannot be had exactly: we strike at the last
heartbeat the driver sends before that task is due to finish, so the crash falls at most one heartbeat
interval (1/h_r) early. The lost time is then short of the model's t_l by that much at most, and we record
how early we struck (`early_by`) so reports can show it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from faults.base import FaultContext
from harness import model
from harness.history import Event

WAIT = 600.0  # wall seconds: no experiment legitimately waits longer for its moment
HB_FLUSH = 0.005  # wall seconds a scheduled heartbeat needs to leave the process (one or two loop rounds)


@dataclass
class Aim:
    req: str | None
    driver: str  # the SLM or module instance processing the target request at that moment
    task: int | None
    early_by: float = 0.0  # wall seconds struck before the modelled worst moment


def worst_task(ctx: FaultContext) -> int:
    """The task whose end is the worst moment to crash (see module docstring)."""
    z = ctx.z
    if z.design == "distributed":
        durations = model.task_durations(z)
        return max(range(1, z.n + 1), key=lambda i: durations[i - 1])
    costs = model.centralised_task_costs(z)
    if z.mechanism == "restart":
        return z.n
    runs = model.unshared_runs(z.n, model.share_points(z.n, z.s_o, z.s_p))
    longest = max(runs, key=lambda run: sum(costs[k - 1] for k in run))
    return longest[-1]


async def target_request(ctx: FaultContext) -> str:
    count = 0

    def nth_submission(e: Event) -> bool:
        nonlocal count
        if e["svc"] == "bss" and e["kind"] == "submitted" and not e.get("warmup"):
            count += 1
            return count == ctx.target_index
        return False

    return (await ctx.history.wait_for(nth_submission, WAIT))["req"]


async def driver_of(ctx: FaultContext, req: str, task: int) -> str:
    """The instance that owns `req` at task `task`: the SLM, or the owning instance of module `task`."""
    if ctx.z.design == "distributed":
        module = {f"m{task}a", f"m{task}b"}
        event = await ctx.history.wait_for(
            lambda e: e["kind"] == "request_received" and e.get("req") == req and e["svc"] in module, WAIT)
    else:
        event = await ctx.history.wait_for(lambda e: e["kind"] == "request_received" and e.get("req") == req, WAIT)
    return event["owner"]


def _done_kind(ctx: FaultContext) -> str:
    return "task_end" if ctx.z.design == "distributed" else "task_reply"


def _start_kind(ctx: FaultContext) -> str:
    return "task_start" if ctx.z.design == "distributed" else "task_call"


async def after_task(ctx: FaultContext, k: int) -> Aim:
    """Right after task k of the target request has finished at its driver."""
    req = await target_request(ctx)
    driver = await driver_of(ctx, req, k)
    done = _done_kind(ctx)
    await ctx.history.wait_for(
        lambda e: e["kind"] == done and e.get("req") == req and e.get("task") == k and e["svc"] == driver, WAIT)
    return Aim(req, driver, k)


async def task_started(ctx: FaultContext, k: int) -> tuple[str, str, Event]:
    """The target request, its driver, and the event of task k starting at (or being called by) it."""
    req = await target_request(ctx)
    driver = await driver_of(ctx, req, k)
    start = _start_kind(ctx)
    event = await ctx.history.wait_for(
        lambda e: e["kind"] == start and e.get("req") == req and e.get("task") == k and e["svc"] == driver, WAIT)
    return req, driver, event


def task_wall_time(ctx: FaultContext, k: int) -> float:
    """Wall seconds from the start (or call) of task k to its end (or reply) at the driver."""
    z = ctx.z
    work = model.task_durations(z)[k - 1]
    if z.design == "centralised":
        work += z.per_task("l_a")[k - 1] + z.per_task("l_b")[k - 1]
    return ctx.scaled(work)


async def worst(ctx: FaultContext) -> Aim:
    """At the driver's last heartbeat before the worst task is due to end (or at its end, if sooner)."""
    k = worst_task(ctx)
    req, driver, started = await task_started(ctx, k)
    due = started["t"] + task_wall_time(ctx, k)
    hb_interval = ctx.scaled(1.0 / ctx.z.h_r)
    done = _done_kind(ctx)
    event = await ctx.history.wait_for(
        lambda e: e["svc"] == driver and (
            (e["kind"] == "hb_sent" and e["t"] >= due - hb_interval)
            or (e["kind"] == done and e.get("req") == req and e.get("task") == k)),
        WAIT)
    if event["kind"] == "hb_sent":
        # hb_sent is recorded as the heartbeat's send is scheduled; give the driver's loop a moment to put it
        # on the wire, or the crash takes it along and the survivor notices one interval early
        await asyncio.sleep(min(HB_FLUSH, hb_interval / 10))
    return Aim(req, driver, k, early_by=max(0.0, due - event["t"]))


async def at_time(ctx: FaultContext, load_started: float) -> Aim:
    """T paper-seconds after the load started; the driver is whoever last took on a request."""
    import time

    assert ctx.z.fault_time is not None
    await asyncio.sleep(max(0.0, load_started + ctx.scaled(ctx.z.fault_time) - time.monotonic()))
    received = [e for e in ctx.history.events if e["kind"] == "request_received" and e["owner"] == e["svc"]]
    if received:
        last = received[-1]
        return Aim(last["req"], last["svc"], last.get("task"))
    first = ctx.deployment.of_role("slm" if ctx.z.design == "centralised" else "module")[0].id
    return Aim(None, first, None)


async def moment(ctx: FaultContext, load_started: float) -> Aim:
    """Wait for the moment z.fault_at names and say who is the driver then."""
    if ctx.z.fault_time is not None:
        return await at_time(ctx, load_started)
    if ctx.z.fault_task is not None:
        return await after_task(ctx, ctx.z.fault_task)
    return await worst(ctx)
