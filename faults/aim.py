"""Where and when a fault strikes, read off the live history.

The target is the `target_index`-th request the BSS submits. Its driver is the instance that processes
it where the fault strikes: the owning SLM (centralised) or the owning instance of module K (distributed).

`worst` follows the model (Eqs 3 and 7): the crash must cost the most work and the longest detection. For
the centralised design that is the end of the longest run of unshared tasks, just before the share that
would have saved it (the moment the worker's reply reaches the SLM); for the distributed one, the end of
the longest task t_i. And it must come directly after a heartbeat the survivors do receive, so they wait
the full t_h + l_hb. Both can only coincide if a heartbeat falls at that moment; in a real system the
heartbeat phase is arbitrary, and the worst phase is one that sends a heartbeat just as the instance dies.
We emulate that phase with the driver's `POST /hb-now` (targets/membership.py): at the end of that task of
that request, before acting on it, the driver sends one heartbeat to every peer and falls silent; the
answer comes once every peer acknowledged it, and the caller then SIGKILLs it. The driver stopped acting
when the heartbeat left, so the lost work and the detection are the model's; the kill itself comes about
2 l_hb later (the acknowledgement's round trip), which changes nothing the survivors can see.

The fault event records it: `hb_triggered`, `silent_at` (monotonic time of that last heartbeat: the
crash as the rest of the system sees it), `hb_acked` (the peers that acknowledged it) and `late_by`
(wall seconds from the worst moment of the configured schedule to the last heartbeat: positive when the
real task ran longer than configured, since the heartbeat goes out at the real end of the task).
A fault other than a crash struck at `worst` (pause, link faults) releases the driver (`POST /release`)
once it has struck.

`task:K@F` explores the crash points (a sweep with `fault_at: every` runs one per class, see
harness/experiment/sweep/runner.py): the same heartbeat at the end of task K of the target request, and then the
driver is muted (no scheduled heartbeat; it goes on working: shares, forwards, the next call) and the crash
comes F heartbeat intervals after that heartbeat. F = 0 is `worst`'s silence at the end of task K (the
result held, nothing acted on). The fault event records `phase` (F) and `last_hb` (that heartbeat's send
time); `silent_at` (the moment the rest of the system last heard from a driver that stopped acting) is set
for F = 0 only, so for F > 0 detection delays count from the kill, when it stopped acting.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from faults.base import FaultContext
from faults.contract import Event
from protocol import auth

WAIT = 600.0  # wall seconds: no experiment legitimately waits longer for its moment


@dataclass
class Aim:
    req: str | None
    driver: str  # the SLM or module instance processing the target request at that moment
    task: int | None
    late_by: float = 0.0  # wall seconds struck after the modelled worst moment (negative: before it)
    silent_at: float | None = None  # the driver's last heartbeat, after which it fell silent (`worst`)
    acked: list[str] = field(default_factory=list)  # the peers that acknowledged that heartbeat
    phase: float | None = None  # task:K@F with F > 0: F, and the heartbeat's send time (the kill F intervals later)
    last_hb: float | None = None

    def fields(self) -> dict[str, Any]:
        """What the fault event records about the moment."""
        out: dict[str, Any] = {"req": self.req, "task": self.task, "late_by": self.late_by}
        if self.silent_at is not None:
            out |= {"hb_triggered": True, "silent_at": self.silent_at, "hb_acked": self.acked}
        if self.phase is not None:
            out |= {"hb_triggered": True, "phase": self.phase, "last_hb": self.last_hb, "hb_acked": self.acked}
        return out


def worst_task(ctx: FaultContext) -> int:
    """The task whose end is the worst moment to crash (see module docstring)."""
    z, model = ctx.z, ctx.model
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
    work = ctx.model.task_durations(z)[k - 1]
    if z.design == "centralised":
        work += z.per_task("l_a")[k - 1] + z.per_task("l_b")[k - 1]
    return ctx.scaled(work)


async def control(ctx: FaultContext, svc: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST to a replica's hb-plane control (targets/membership.py) directly, never through a link's proxy:
    the harness is not part of the modelled system. None when the replica answers 409 (too late). Signed with the
    replica's own key (its spec's `secret`), which nothing else on the run's network holds (docs/security.md)."""
    spec = ctx.deployment.service(svc)
    url = f"http://{spec.bind}:{spec.ports['hb']}{path}"
    headers = {auth.HEADER: spec.secret} if spec.secret else {}
    async with aiohttp.ClientSession() as session, session.post(
            url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=WAIT)) as resp:
        if resp.status == 409:
            return None
        if resp.status >= 400:
            raise RuntimeError(f"{svc} {path}: {resp.status} {await resp.text()}")
        answer: dict[str, Any] = await resp.json()
        return answer


async def worst(ctx: FaultContext) -> Aim:
    """The driver's last heartbeat at the end of the worst task, then silence (see module docstring)."""
    k = worst_task(ctx)
    req, driver, started = await task_started(ctx, k)
    due = started["t"] + task_wall_time(ctx, k)
    answer = await control(ctx, driver, "/hb-now", {"req": req, "task": k, "silence": True})
    if answer is None:  # the task ended before we could ask (a tiny t_i): the worst we can still do is now
        answer = await control(ctx, driver, "/hb-now", {"silence": True})
        assert answer is not None
    return Aim(req, driver, k, late_by=answer["sent"] - due, silent_at=answer["sent"], acked=answer["acked"])


async def at_phase(ctx: FaultContext, k: int, phase: float) -> Aim:
    """`task:K@F`: the driver's heartbeat at the end of task k, then muted (F > 0: it goes on working) or
    silent (F = 0); returns once F heartbeat intervals have passed since that heartbeat (module docstring)."""
    req, driver, started = await task_started(ctx, k)
    due = started["t"] + task_wall_time(ctx, k)
    answer = await control(ctx, driver, "/hb-now", {"req": req, "task": k, "silence": phase == 0, "mute": True})
    if answer is None:
        raise RuntimeError(f"{driver} was past the end of task {k} of {req} before it could be asked")
    late_by = answer["sent"] - due
    if phase == 0:
        return Aim(req, driver, k, late_by=late_by, silent_at=answer["sent"], acked=answer["acked"])
    await asyncio.sleep(max(0.0, answer["sent"] + phase * ctx.scaled(1 / ctx.z.h_r) - time.monotonic()))
    return Aim(req, driver, k, late_by=late_by, acked=answer["acked"], phase=phase, last_hb=answer["sent"])


async def release(ctx: FaultContext, hit: Aim | None) -> None:
    """Let a driver silenced by `worst` or muted by `task:K@F` speak again (a pause or a link fault, not a
    crash)."""
    if hit is not None and (hit.silent_at is not None or hit.phase is not None):
        await control(ctx, hit.driver, "/release", {})


async def at_time(ctx: FaultContext, load_started: float) -> Aim:
    """T paper-seconds after the load started; the driver is whoever last took on a request."""
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
    if ctx.z.fault_task is not None and ctx.z.fault_phase is not None:
        return await at_phase(ctx, ctx.z.fault_task, ctx.z.fault_phase)
    if ctx.z.fault_task is not None:
        return await after_task(ctx, ctx.z.fault_task)
    return await worst(ctx)
