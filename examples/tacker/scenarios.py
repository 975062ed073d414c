"""Tacker's control plane under the faults issue 23 names, observed by hand on one stack (no harness): what
the harness's fault catalogue will meet. Each scenario prints what it saw; `--json` keeps it.

    flock /tmp/manobench-heavy.lock .venv-tacker/bin/python examples/tacker/scenarios.py [--only NAME ...]

- onboard_race: K packages uploaded one after the other with two conductors: how many stay PROCESSING.
- master_kill: SIGKILL of the busy conductor's PID only (its cotyledon master; what a runtime that signals a
  PID does): what its worker does, and the operation.
- worker_kill: SIGKILL of the busy conductor's worker only: the master forks a new one, whose start-up sweep
  fails the operation.
- false_failure: restart of the *other* conductor while an operation is live: the sweep marks it FAILED_TEMP,
  a retry then gets 409, and the operation ends COMPLETED anyway (with the stale error attached?).
- lost: an instantiate accepted (202) while no conductor runs, then one conductor starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import client as tc  # noqa: E402
import stack as st  # noqa: E402
from smoke import Smoke, say  # noqa: E402

SLOW = 20.0  # s: the VIM's stack creation while a fault is placed


class Scenarios(Smoke):
    async def occ(self, c: tc.TackerClient, op: str) -> dict[str, Any]:
        return await self.op_state(c, op)

    async def watch(self, c: tc.TackerClient, op: str, seconds: float, every: float = 1.0) -> list[tuple[float, str]]:
        t0 = time.monotonic()
        seen: list[tuple[float, str]] = []
        while time.monotonic() - t0 < seconds:
            state = (await self.occ(c, op))["operationState"]
            if not seen or seen[-1][1] != state:
                seen.append((round(time.monotonic() - t0, 1), state))
            await asyncio.sleep(every)
        return seen

    async def start_instantiate(self, c: tc.TackerClient) -> tuple[str, str]:
        """Create an instance and start its instantiate: (instance id, operation id)."""
        inst = await c._post(f"{c.api}/vnflcm/v2/vnf_instances", {"vnfdId": c.vnfd_id}, (201,))
        op = await c._start_op(f"{c.api}/vnflcm/v2/vnf_instances/{inst['id']}/instantiate", c._instantiate_body())
        return inst["id"], op

    async def wait_state(self, c: tc.TackerClient, op: str, states: tuple[str, ...], timeout: float) -> str:
        t0 = time.monotonic()
        state = ""
        while time.monotonic() - t0 < timeout:
            state = (await self.occ(c, op))["operationState"]
            if state in states:
                return state
            await asyncio.sleep(0.1)
        return state

    def pids_of(self, name: str) -> tuple[int, list[int]]:
        master = self.stack.pid(name)
        return master, [p for p in self.stack.group(name) if p != master and st._comm(p) != "python"]

    async def onboard_race(self, c: tc.TackerClient, k: int = 8) -> dict[str, Any]:
        stuck, times = 0, []
        for i in range(k):
            data = tc.csar_mod.build(Path(self.stack.paths.root) / "client" / f"race-{i}.zip")[0].read_bytes()
            t0 = time.monotonic()
            pkg = await c._post(f"{c.api}/vnfpkgm/v1/vnf_packages", {}, (201,), headers={})
            await c._request("PUT", f"{c.api}/vnfpkgm/v1/vnf_packages/{pkg['id']}/package_content", data, (202,),
                             {"Content-Type": "application/zip"})
            state, _ = await c._wait_onboarded(pkg["id"], 8.0)
            if state == "PROCESSING":
                stuck += 1
            else:
                times.append(round(time.monotonic() - t0, 2))
            say(f"   package {pkg['id'][:8]}: {state}")
        return {"uploaded": k, "stuck_processing": stuck, "seconds_others": times}

    async def master_kill(self, c: tc.TackerClient) -> dict[str, Any]:
        await self.vim_config(stack_seconds=SLOW)
        _, op = await self.start_instantiate(c)
        await self.wait_state(c, op, ("PROCESSING",), 10)
        busy = await asyncio.to_thread(self.busy_conductor, op)
        master, workers = self.pids_of(busy)
        t0 = time.monotonic()
        os.kill(master, signal.SIGKILL)
        gone: dict[int, float] = {}
        while time.monotonic() - t0 < 10 and len(gone) < len(workers):
            for w in workers:
                if (w not in gone and not Path(f"/proc/{w}").exists()) or st._stat(w)[:1] == ["Z"]:
                    gone.setdefault(w, round(time.monotonic() - t0, 2))
            await asyncio.sleep(0.1)
        seen = await self.watch(c, op, SLOW + 5)
        await self.vim_config(stack_seconds=0)
        say(f"   {busy}: master {master} SIGKILLed; its worker(s) exited after {gone} s; op: {seen}")
        self.stack.procs[busy].signal(signal.SIGKILL)
        await asyncio.to_thread(self.stack.procs[busy].popen.wait)
        await asyncio.to_thread(self.stack.start, busy)
        after = await self.wait_state(c, op, ("FAILED_TEMP", "COMPLETED"), 30)
        say(f"   after {busy}'s restart: {after}")
        return {"busy": busy, "worker_exit_s": gone, "states": seen, "after_restart": after}

    async def worker_kill(self, c: tc.TackerClient) -> dict[str, Any]:
        await self.vim_config(stack_seconds=SLOW)
        _, op = await self.start_instantiate(c)
        await self.wait_state(c, op, ("PROCESSING",), 10)
        busy = await asyncio.to_thread(self.busy_conductor, op)
        master, workers = self.pids_of(busy)
        t0 = time.monotonic()
        for w in workers:
            os.kill(w, signal.SIGKILL)
        state = await self.wait_state(c, op, ("FAILED_TEMP", "COMPLETED", "FAILED"), 60)
        took = round(time.monotonic() - t0, 2)
        await self.vim_config(stack_seconds=0)
        new_workers = self.pids_of(busy)[1]
        say(f"   {busy}: worker(s) {workers} SIGKILLed; master {master} forked {new_workers}; op {state} after "
            f"{took} s")
        return {"busy": busy, "state": state, "seconds": took, "respawned": new_workers != workers}

    async def false_failure(self, c: tc.TackerClient) -> dict[str, Any]:
        await self.vim_config(stack_seconds=SLOW)
        _, op = await self.start_instantiate(c)
        await self.wait_state(c, op, ("PROCESSING",), 10)
        busy = await asyncio.to_thread(self.busy_conductor, op)
        other = next(x for x in self.stack.conductor_ids if x != busy)
        t0 = time.monotonic()
        self.stack.procs[other].signal(signal.SIGKILL)
        await asyncio.to_thread(self.stack.procs[other].popen.wait)
        await asyncio.to_thread(self.stack.start, other)
        state = await self.wait_state(c, op, ("FAILED_TEMP", "COMPLETED"), 30)
        t_ft = round(time.monotonic() - t0, 2)
        status = await c._retry("false-failure", op, "instantiate") if state == "FAILED_TEMP" else None
        final = await self.wait_state(c, op, ("COMPLETED", "FAILED", "ROLLED_BACK"), SLOW + 15)
        occ = await self.occ(c, op)
        await self.vim_config(stack_seconds=0)
        err = (occ.get("error") or {}).get("detail")
        say(f"   {other} restarted while {busy} ran op: {state} after {t_ft} s; retry then -> {status}; the op ends "
            f"{final} {round(time.monotonic() - t0, 1)} s after the restart, error attached: {err!r}")
        return {"busy": busy, "restarted": other, "state_after_restart": state, "retry_status": status,
                "final": final, "error_attached": err}

    async def lost(self, c: tc.TackerClient) -> dict[str, Any]:
        for name in self.stack.conductor_ids:
            self.stack.procs[name].signal(signal.SIGKILL)
            await asyncio.to_thread(self.stack.procs[name].popen.wait)
        _, op = await self.start_instantiate(c)  # 202: accepted with no conductor running
        seen = await self.watch(c, op, 5.0)
        first = self.stack.conductor_ids[0]
        await asyncio.to_thread(self.stack.start, first)
        final = await self.wait_state(c, op, ("COMPLETED", "ROLLED_BACK", "FAILED_TEMP"), 30)
        await asyncio.sleep(3.0)
        final = (await self.occ(c, op))["operationState"]
        for name in self.stack.conductor_ids[1:]:
            await asyncio.to_thread(self.stack.start, name)
        say(f"   accepted with no conductor: {seen}; after {first} started: {final}")
        return {"while_down": seen, "after_start": final}

    async def run_all(self, only: list[str]) -> None:
        s = self.stack
        say(f"run {s.run} in {s.paths.root}")
        self.report["bring_up"] = {k: round(v, 2) for k, v in (await asyncio.to_thread(s.up)).items()}
        say(f"bring-up: {self.report['bring_up']}")
        c = tc.TackerClient()
        await c.open(self.client_setup())
        try:
            for name in ("onboard_race", "master_kill", "worker_kill", "false_failure", "lost"):
                if only and name not in only:
                    continue
                say(f"{name}:")
                try:
                    self.report[name] = await getattr(self, name)(c)
                except Exception as e:
                    self.report[name] = {"error": f"{type(e).__name__}: {e}"}
                    say(f"   error: {type(e).__name__}: {e}")
        finally:
            await c.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=[])
    p.add_argument("--json")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="manobench-tacker-"))
    os.chmod(root, 0o711)
    sc = Scenarios(root / "run", 0)
    try:
        with st.signals_raise():
            try:
                asyncio.run(sc.run_all(a.only))
            except KeyboardInterrupt:
                sc.problems.append("interrupted")
            finally:
                sc.teardown_and_check()
    finally:
        if a.json:
            Path(a.json).write_text(json.dumps(sc.report, indent=1) + "\n")
        if a.keep:
            say(f"run folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say("scenarios: " + ("nothing left behind" if not sc.problems else "; ".join(sc.problems)))
    return 0 if not sc.problems else 1


if __name__ == "__main__":
    sys.exit(main())
