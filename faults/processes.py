"""Faults on the MANO's own processes: slm-crash (SIGKILL the driver), worker-crash (SIGKILL the worker
answering task K), slm-pause (SIGSTOP the driver for fault_for: a grey failure). faults/catalogue.py
says what each does to each design."""

from __future__ import annotations

import asyncio
import time

from faults import aim
from faults.aimed import Aimed


class SlmCrash(Aimed):
    name = "slm-crash"

    async def strike(self, hit: aim.Aim) -> None:
        self.record("kill", hit.driver)
        self.ctx.processes.kill(hit.driver)


class WorkerCrash(Aimed):
    name = "worker-crash"

    async def inject(self) -> None:
        if self.ctx.z.design == "distributed":
            return await super().inject()  # the modules are the workers
        ctx = self.ctx
        k = ctx.z.fault_task or aim.worst_task(ctx)
        req, driver, call = await aim.task_started(ctx, k)
        # the replica that took the call is the one whose task starts: on the bus, replicas share one queue
        # (one address), so the address called cannot name it
        started = await ctx.history.wait_for(
            lambda e: e["kind"] == "task_start" and e.get("req") == req and e.get("task") == k and e["t"] >= call["t"],
            aim.WAIT)
        worker = started["svc"]
        due = call["t"] + ctx.scaled(ctx.z.per_task("l_a")[k - 1] + 0.9 * ctx.z.per_task("t_i")[k - 1])
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        self.hit = aim.Aim(req, driver, k)
        self.record("kill", worker)
        ctx.processes.kill(worker)

    async def strike(self, hit: aim.Aim) -> None:
        self.record("kill", hit.driver)
        self.ctx.processes.kill(hit.driver)


class SlmPause(Aimed):
    name = "slm-pause"

    async def strike(self, hit: aim.Aim) -> None:
        self.record("pause", hit.driver, duration=self.ctx.z.fault_duration)
        self.ctx.processes.pause(hit.driver)
        self.struck = True
        await self.hold()

    async def restore(self) -> None:
        assert self.hit is not None, "struck at the moment aimed at"
        self.ctx.processes.resume(self.hit.driver)
        self.record("resume", self.hit.driver)
        await aim.release(self.ctx, self.hit)  # silenced by `worst`: it wakes up and goes on
