"""Smoke test of the Tacker target, end to end, on this machine (no harness needed):

1. bring the whole stack up in a temporary run folder (MariaDB, RabbitMQ, the VIM stub, tacker-server, two
   tacker-conductors), each from the command a target file runs, and print each one's time to ready;
2. onboard the package with the client (TackerClient.open);
3. run N workflows (create + instantiate + terminate + delete) fault-free, printing each one's time;
4. make the VIM's stack creation slow, start one workflow, find the conductor that took its instantiate (its
   log names the operation), SIGKILL it (its whole process group: the cotyledon master and its worker) in the
   middle of the instantiate, and show the operation stuck in PROCESSING while the other conductor lives on;
5. restart the killed conductor and show its start-up sweep moving the operation to FAILED_TEMP; then the
   operator's retry (recorded) taking it to COMPLETED, and one more workflow fault-free;
6. tear everything down and check that nothing is left: no process labelled with the run, no epmd, no port.

    flock /tmp/manobench-heavy.lock .venv-tacker/bin/python examples/tacker/smoke.py [--workflows 5] [--keep]

Exit 0 when every step behaved as described, 1 otherwise (what differed is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import client as tc  # noqa: E402
import stack as st  # noqa: E402

from protocol.client import ClientSetup  # noqa: E402  (client put the repository on the path)

STUCK_FOR = 12.0  # seconds the operation is watched after the crash
STACK_SECONDS = 30.0  # how long the VIM takes to create the crash workflow's stack


def say(text: str) -> None:
    print(text, flush=True)


class Smoke:
    def __init__(self, root: Path, workflows: int, spec: bool = False, poll: float = 0.2) -> None:
        self.stack = st.Stack(root, conductors=2, spec=spec)
        self.workflows = workflows
        self.poll = poll
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.problems: list[str] = []
        self.report: dict[str, Any] = {"run": self.stack.run, "root": str(root)}

    def check(self, ok: bool, what: str) -> None:
        say(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.problems.append(what)

    def client_setup(self, options: dict[str, Any] | None = None) -> ClientSetup:
        s = self.stack
        workdir = s.paths.root / "client"
        workdir.mkdir(parents=True, exist_ok=True)
        return ClientSetup(run=s.run, entries={"server": {"api": s.addr("api")}, "vim": {"vim": s.addr("vim")}},
                           time_scale=1.0, options=options or {}, workdir=str(workdir), base=str(HERE),
                           record=lambda action, **f: self.records.append((action, f)))

    async def vim_config(self, **cfg: Any) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.post(f"{self.stack.vim_url}/stub/config", json=cfg) as r:
            r.raise_for_status()

    async def op_state(self, client: tc.TackerClient, op: str) -> dict[str, Any]:
        return await client._request("GET", f"{client.api}/vnflcm/v2/vnf_lcm_op_occs/{op}", None, (200,), tc.V2)

    async def processing_op(self, client: tc.TackerClient, timeout: float = 20.0) -> dict[str, Any]:
        """The first INSTANTIATE operation seen in PROCESSING."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            occs = await client._request("GET", f"{client.api}/vnflcm/v2/vnf_lcm_op_occs", None, (200,), tc.V2)
            for occ in occs:
                if occ.get("operation") == "INSTANTIATE" and occ.get("operationState") == "PROCESSING":
                    return occ
            await asyncio.sleep(0.1)
        raise RuntimeError("no instantiate reached PROCESSING")

    def busy_conductor(self, op: str, timeout: float = 10.0) -> str:
        """The conductor whose log shows it took operation `op` (start_lcm_op, logged by tacker.common.log)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for name in self.stack.conductor_ids:
                log = self.stack.paths.log(name)
                if log.exists() and any("start_lcm_op" in line and op in line
                                        for line in log.read_text(errors="replace").splitlines()):
                    return name
            time.sleep(0.2)
        raise RuntimeError(f"no conductor log names operation {op}")

    async def run(self) -> None:
        s = self.stack
        say(f"run {s.run} in {s.paths.root}" + (" (instances started from MANOBENCH_SPEC)" if s.spec else ""))
        say("1. bring-up (all components started at once; each waits for what it needs)")
        timings = await asyncio.to_thread(s.up)
        for name, t in timings.items():
            say(f"   {name:12s} ready in {t:6.2f} s")
        self.report["bring_up"] = {k: round(v, 2) for k, v in timings.items()}
        await asyncio.sleep(2.0)
        self.report["memory_idle_mb"] = s.memory()
        say(f"   memory (PSS, MB) idle: {json.dumps(self.report['memory_idle_mb'])}")

        say("2. onboarding")
        client = tc.TackerClient()
        t0 = time.monotonic()
        await client.open(self.client_setup({"poll": self.poll}))
        onboarded = [f for a, f in self.records if a == "onboarded"]
        say(f"   onboarded in {time.monotonic() - t0:.2f} s: {onboarded[-1] if onboarded else '-'}")
        self.report["onboard"] = onboarded[-1] if onboarded else None
        self.check(bool(onboarded), "the package is ONBOARDED (client action 'onboarded' recorded)")
        try:
            await self.fault_free(client, self.workflows, "3")
            await self.crash(client)
            await self.fault_free(client, 1, "6")
        finally:
            await client.close()
        self.report["memory_after_mb"] = s.memory()
        say(f"   memory (PSS, MB) after the workflows: {json.dumps(self.report['memory_after_mb'])}")

    async def fault_free(self, client: tc.TackerClient, n: int, step: str) -> None:
        say(f"{step}. {n} workflow(s) fault-free (create + instantiate + terminate + delete)")
        times, calls0 = [], (await tc.vim_stats(self.stack.vim_url))["total"]
        for i in range(n):
            t0 = time.monotonic()
            out = await client.invoke(f"smoke-{step}-{i}", 60.0)
            took = time.monotonic() - t0
            d = out.detail
            say(f"   workflow {i + 1}: {out.status} {out.state} in {took:.3f} s (create {d.get('t_create', 0):.3f}, "
                f"to instantiated {d.get('t_instantiate', 0):.3f}, terminate {d.get('t_terminate', 0):.3f})")
            self.check(out.status == "ok" and out.state == "COMPLETED", f"workflow {i + 1} ok COMPLETED")
            times.append(took)
        calls = (await tc.vim_stats(self.stack.vim_url))["total"] - calls0
        spread = {"n": n, "mean": round(statistics.mean(times), 3), "min": round(min(times), 3),
                  "max": round(max(times), 3),
                  "stdev": round(statistics.stdev(times), 3) if n > 1 else 0.0, "vim_calls_per_workflow": calls / n}
        say(f"   workflow time: {json.dumps(spread)}")
        self.report.setdefault("fault_free", []).append(spread)

    async def crash(self, client: tc.TackerClient) -> None:
        s = self.stack
        say(f"4. crash of the busy conductor mid-instantiate (the VIM takes {STACK_SECONDS:g} s to create the stack)")
        await self.vim_config(stack_seconds=STACK_SECONDS)
        task = asyncio.create_task(client.invoke("smoke-crash", STUCK_FOR + 8.0))
        occ = await self.processing_op(client)
        op = occ["id"]
        busy = await asyncio.to_thread(self.busy_conductor, op)
        other = next(c for c in s.conductor_ids if c != busy)
        t_kill = time.monotonic()
        s.procs[busy].signal(signal.SIGKILL)  # the whole group: master and worker, as a host crash would
        await asyncio.to_thread(s.procs[busy].popen.wait)
        say(f"   operation {op} PROCESSING on {busy}: SIGKILLed (pgid {s.procs[busy].pid}); {other} lives on")
        await self.vim_config(stack_seconds=0)  # nothing is slow any more: only the crash keeps it
        seen = []
        while time.monotonic() - t_kill < STUCK_FOR:
            seen.append((round(time.monotonic() - t_kill, 1), (await self.op_state(client, op))["operationState"]))
            await asyncio.sleep(2.0)
        say(f"   after the crash: {seen}")
        self.check(all(state == "PROCESSING" for _, state in seen),
                   f"the operation stays PROCESSING for {STUCK_FOR:g} s after the crash (nobody takes it over)")
        self.check(s.procs[other].alive(), f"{other} (the survivor) is alive and did not take the operation")
        out = await task
        say(f"   the workflow's outcome at its deadline: {out.status} {out.state}")
        self.check(out.status == "info" and out.state == "PROCESSING", "the client reports info / PROCESSING (stuck)")
        self.report["crash"] = {"op": op, "busy": busy, "states_after_kill": seen,
                                "outcome": [out.status, out.state]}

        say(f"5. restart of {busy}: its start-up sweep")
        t_restart = time.monotonic()
        await asyncio.to_thread(s.start, busy)
        ready = time.monotonic() - t_restart
        state, t_state = "PROCESSING", 0.0
        while time.monotonic() - t_restart < 60.0:
            occ = await self.op_state(client, op)
            state = occ["operationState"]
            if state != "PROCESSING":
                t_state = time.monotonic() - t_restart
                break
            await asyncio.sleep(0.2)
        err = (occ.get("error") or {}).get("detail")
        say(f"   {busy} ready again in {ready:.2f} s; the operation is {state} {t_state:.2f} s after the restart "
            f"(error: {err!r})")
        self.check(state == "FAILED_TEMP", "the restarted conductor's sweep moves it to FAILED_TEMP")
        self.report["restart"] = {"conductor_ready_s": round(ready, 2), "failed_temp_after_s": round(t_state, 2),
                                  "error": err}

        say("   the operator's retry (a recorded client action)")
        t_retry = time.monotonic()
        status = await client._retry("smoke-crash", op, "instantiate")
        final = state
        while time.monotonic() - t_retry < 60.0:
            final = (await self.op_state(client, op))["operationState"]
            if final in ("COMPLETED", "FAILED_TEMP", "FAILED", "ROLLED_BACK") and time.monotonic() - t_retry > 0.5:
                break
            await asyncio.sleep(0.2)
        took = time.monotonic() - t_retry
        say(f"   retry answered {status}; the operation is {final} {took:.2f} s later; "
            f"from the crash to COMPLETED: {time.monotonic() - t_kill:.1f} s")
        self.check(status == 202 and final == "COMPLETED", "the retry completes the instantiate")
        self.check(any(a == "retry" for a, _ in self.records), "the retry is recorded as a client action")
        self.report["retry"] = {"status": status, "state": final, "seconds": round(took, 2),
                                "crash_to_completed_s": round(time.monotonic() - t_kill, 1)}
        inst = (await self.op_state(client, op))["vnfInstanceId"]  # clean the instance, as the workflow would
        top = await client._start_op(f"{client.api}/vnflcm/v2/vnf_instances/{inst}/terminate",
                                     {"terminationType": "FORCEFUL"})
        for _ in range(100):
            if (await self.op_state(client, top))["operationState"] == "COMPLETED":
                break
            await asyncio.sleep(0.2)
        await client._request("DELETE", f"{client.api}/vnflcm/v2/vnf_instances/{inst}", None, (204,), tc.V2)

    def teardown_and_check(self) -> None:
        s = self.stack
        say("7. teardown")
        t0 = time.monotonic()
        swept = s.down()
        say(f"   down in {time.monotonic() - t0:.1f} s (swept by label afterwards: {swept})")
        time.sleep(0.5)
        left = st.labelled(s.run)
        self.check(not left, f"no process labelled MANOBENCH_RUN={s.run} is left ({left})")
        epmd = [p for p in st._all_pids() if st._comm(p) == "epmd"
                and st._environ(p).get("ERL_EPMD_PORT") == str(s.ports["epmd"])]
        self.check(not epmd, f"no epmd of the run is left ({epmd})")
        busy_ports = []
        for plane, port in s.ports.items():
            with socket.socket() as sock:
                if sock.connect_ex((s.host, port)) == 0:
                    busy_ports.append(f"{plane}:{port}")
        self.check(not busy_ports, f"no port of the run still listens ({busy_ports})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workflows", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the run folder (logs) afterwards")
    p.add_argument("--json", help="write the measurements to this file")
    p.add_argument("--poll", type=float, default=0.2, help="the client's poll interval (s)")
    p.add_argument("--spec", action="store_true",
                   help="start each component as a target file's instance (MANOBENCH_SPEC, health ports)")
    a = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="manobench-tacker-"))
    os.chmod(root, 0o711)  # mariadbd runs as mysql: it must get through (nothing is listed or readable)
    smoke = Smoke(root / "run", a.workflows, a.spec, a.poll)
    t0 = time.monotonic()
    try:
        with st.signals_raise():
            try:
                asyncio.run(smoke.run())
            except KeyboardInterrupt:
                smoke.problems.append("interrupted")
            except Exception as e:
                smoke.problems.append(f"{type(e).__name__}: {e}")
                say(f"  [FAIL] {type(e).__name__}: {e}")
            finally:
                smoke.teardown_and_check()
    finally:
        smoke.report["seconds"] = round(time.monotonic() - t0, 1)
        smoke.report["problems"] = smoke.problems
        if a.json:
            Path(a.json).write_text(json.dumps(smoke.report, indent=1) + "\n")
        if a.keep:
            say(f"run folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say(f"smoke: {'PASS' if not smoke.problems else 'FAIL: ' + '; '.join(smoke.problems)} "
        f"({smoke.report['seconds']} s)")
    return 0 if not smoke.problems else 1


if __name__ == "__main__":
    sys.exit(main())
