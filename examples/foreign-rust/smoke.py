#!/usr/bin/env python3
"""A developer's smoke test of foreign-mano, by hand, without the harness (not part of the test suite).

Starts 2 SLMs and 3 workers of the centralised design on 127.x.y.z addresses with hand-made MANOBENCH_SPEC
values, runs a tiny BSS (/complete, checking each SLM's key), and per round:

1. fault-free: submits requests to both SLMs and measures t_c (submit -> completion notice);
2. crash: submits requests, SIGKILLs the owner (slm-a, the lowest id) while several are mid-workflow, goes on
   submitting, and checks every crash victim's latency against README.md's formula, using the survivor's
   log lines (CLOCK_MONOTONIC, the clock of time.monotonic()) for the detection time and the resume task;
3. rejoin: restarts slm-a, which becomes the owner again, and runs a few more requests.

Every request must complete exactly once, but for the design's one duplicate window (README.md: the BSS had
acknowledged the dead owner's notice, its /done had not reached the survivor yet), which is reported and allowed.
Exit status 0 when every check passed.

    flock /tmp/manobench-heavy.lock /work/main/.venv/bin/python examples/foreign-rust/smoke.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

HERE = Path(__file__).resolve().parent
BINARY = HERE / "target" / "release" / "foreign-mano"
STEPS = {"m1": 0.1, "m2": 0.2, "m3": 0.1}  # worker -> --step (s)
WORKERS = list(STEPS)
HB_INTERVAL, HB_TIMEOUT = 0.1, 0.5
PORTS = {"op": 9100, "hb": 9101, "state": 9102}
HEADER = "X-Manobench-Secret"


def key(secret: str, name: str) -> str:  # protocol.auth.key, restated: this tool imports nothing of manobench
    return hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()[:32]


class Proc:
    """One foreign-mano instance, its stderr read line by line on a thread."""

    def __init__(self, sid: str, argv: list[str], spec: dict) -> None:
        self.sid, self.argv, self.spec = sid, argv, spec
        self.lines: list[str] = []
        self.p: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "MANOBENCH_SPEC": json.dumps(self.spec)}
        self.lines = []
        self.p = subprocess.Popen([str(BINARY), *self.argv], env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=HERE)
        threading.Thread(target=self._read, args=(self.p,), daemon=True).start()

    def _read(self, p: subprocess.Popen) -> None:
        assert p.stderr is not None
        for line in p.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self, word: str) -> list[tuple[float, dict[str, str]]]:
        """(monotonic time, key=value fields) of this instance's log lines whose first word is `word`."""
        out = []
        for line in self.lines:
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2] == word:
                fields = dict(re.findall(r"(\w+)=(\S+)", parts[3] if len(parts) > 3 else ""))
                out.append((float(parts[0]), fields))
        return out

    def stop(self) -> int | None:
        """SIGTERM; the exit status (None if it took longer than 1 s: then SIGKILL)."""
        if self.p is None or self.p.poll() is not None:
            return self.p.returncode if self.p else None
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None


class Bss:
    """The completion notices' receiver: arrival time and count per request, keys checked."""

    def __init__(self, host: str, secret: str) -> None:
        self.host, self.secret = host, secret
        self.done: dict[str, list[tuple[float, str]]] = {}
        self.refused = 0
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/complete", self.complete)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def complete(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        body = await request.json()
        by = body.get("by", "?")
        if not hmac.compare_digest(key(self.secret, by), request.headers.get(HEADER, "")):
            self.refused += 1
            raise web.HTTPForbidden(text="wrong key")
        self.done.setdefault(body["req"], []).append((now, by))
        return web.json_response({"ok": True})


class Round:
    def __init__(self, base: str, session: aiohttp.ClientSession, bss: Bss, secret: str) -> None:
        self.session, self.bss, self.secret = session, bss, secret
        self.addr = {"slm-a": f"{base}.3", "slm-b": f"{base}.4",
                     "m1": f"{base}.5", "m2": f"{base}.6", "m3": f"{base}.7"}
        self.procs: dict[str, Proc] = {}
        self.submitted: dict[str, float] = {}
        for sid, host in self.addr.items():
            if sid.startswith("slm"):
                other = "slm-b" if sid == "slm-a" else "slm-a"
                peers = {other: {"hb": f"{self.addr[other]}:{PORTS['hb']}",
                                 "state": f"{self.addr[other]}:{PORTS['state']}"},
                         **{m: {"op": f"{self.addr[m]}:{PORTS['op']}"} for m in WORKERS}}
                spec = {"id": sid, "role": "slm", "run": "smoke", "bind": host, "ports": PORTS, "peers": peers,
                        "bss": f"{bss.host}:{bss.port}", "secret": key(secret, sid), "z": {}, "collector": None,
                        "unknown_field": [1, 2]}
                argv = ["slm", "--workers", ",".join(WORKERS), "--hb-interval", str(HB_INTERVAL),
                        "--hb-timeout", str(HB_TIMEOUT)]
            else:
                spec = {"id": sid, "role": "worker", "run": "smoke", "bind": host, "ports": {"op": PORTS["op"]},
                        "peers": {}, "bss": None, "secret": key(secret, sid), "z": {}, "collector": None}
                argv = ["worker", "--step", str(STEPS[sid])]
            self.procs[sid] = Proc(sid, argv, spec)

    async def healthy(self, sids: list[str], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for sid in sids:
            while True:
                try:
                    async with self.session.get(f"http://{self.addr[sid]}:{PORTS['op']}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"smoke: {sid} not healthy after {timeout} s; its log:\n"
                                     + "\n".join(self.procs[sid].lines))
                await asyncio.sleep(0.02)

    async def submit(self, req: str) -> None:
        """To every SLM at once, as the harness's BSS does; a dead one's refusal is ignored."""
        self.submitted[req] = time.monotonic()

        async def one(sid: str) -> int | None:
            try:
                async with self.session.post(f"http://{self.addr[sid]}:{PORTS['op']}/request", json={"req": req},
                                             timeout=aiohttp.ClientTimeout(total=2)) as r:
                    return r.status
            except (TimeoutError, aiohttp.ClientError):
                return None

        statuses = await asyncio.gather(one("slm-a"), one("slm-b"))
        if not any(s in (200, 202) for s in statuses):
            print(f"  !! request {req[:8]} accepted by no SLM: {statuses}")

    async def wait_done(self, reqs: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(r not in self.bss.done for r in reqs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def latency(self, req: str) -> float:
        return self.bss.done[req][0][0] - self.submitted[req]


def spread(xs: list[float]) -> str:
    if not xs:
        return "-"
    return (f"n={len(xs)} min {min(xs)*1000:.1f} median {statistics.median(xs)*1000:.1f} "
            f"max {max(xs)*1000:.1f} ms")


async def one_round(rnd: Round, index: int, tol: float, checks: list[str], summary: dict[str, list[float]]) -> None:
    n_tasks = len(WORKERS)
    steps = [STEPS[m] for m in WORKERS]
    for sid in ["m1", "m2", "m3", "slm-a", "slm-b"]:
        rnd.procs[sid].start()
    await rnd.healthy(list(rnd.addr))
    background: set[asyncio.Task[None]] = set()  # RUF006: the event loop keeps only weak references to tasks

    def submit_in_background(req: str) -> None:
        task = asyncio.ensure_future(rnd.submit(req))
        background.add(task)
        task.add_done_callback(background.discard)

    # 1. fault-free
    free = [str(uuid.uuid4()) for _ in range(10)]
    for req in free:
        submit_in_background(req)
        await asyncio.sleep(0.05)
    await rnd.wait_done(free, 5)
    lat = [rnd.latency(r) for r in free if r in rnd.bss.done]
    if len(lat) != len(free):
        checks.append(f"round {index}: {len(free) - len(lat)} fault-free requests never completed")
    t_c = statistics.median(lat)
    summary["t_c"] += lat
    print(f"round {index}: fault-free t_c {spread(lat)} (sum of steps {sum(steps)*1000:.0f} ms)")
    owners = {rnd.bss.done[r][0][1] for r in free if r in rnd.bss.done}
    if owners != {"slm-a"}:
        checks.append(f"round {index}: fault-free requests completed by {owners}, expected slm-a (lowest id)")

    # 2. crash of the owner mid-workflow
    crash = [str(uuid.uuid4()) for _ in range(14)]  # one every 50 ms: ~8 in flight at once
    t_x = 0.0
    first = time.monotonic()
    # after the first request or two completed, at a random phase, so victims land at various points of a task
    kill_after = 0.42 + random.uniform(0, 0.10)
    for k, req in enumerate(crash):
        while True:  # submit at first + 0.05 k, and kill at first + kill_after
            now = time.monotonic()
            if not t_x and now >= first + kill_after:
                t_x = time.monotonic()
                os.kill(rnd.procs["slm-a"].p.pid, signal.SIGKILL)  # type: ignore[union-attr]
                continue
            if now >= first + 0.05 * k:
                break
            await asyncio.sleep(min(0.002, first + 0.05 * k - now))
        submit_in_background(req)
    await rnd.wait_done(crash, 10)
    rnd.procs["slm-a"].p.wait()  # type: ignore[union-attr]
    survivor = rnd.procs["slm-b"]
    dead = [(t, f) for t, f in survivor.events("peer_dead") if f.get("peer") == "slm-a"]
    if len(dead) != 1:
        checks.append(f"round {index}: slm-b declared slm-a dead {len(dead)} times")
        return
    t_d = dead[0][0]
    D = t_d - t_x
    summary["D"].append(D)
    if not HB_TIMEOUT - HB_INTERVAL - tol <= D <= HB_TIMEOUT + tol:
        checks.append(f"round {index}: detection {D*1000:.1f} ms outside [t_h - T, t_h] = "
                      f"[{(HB_TIMEOUT-HB_INTERVAL)*1000:.0f}, {HB_TIMEOUT*1000:.0f}] ms (+-{tol*1000:.0f})")
    dup_window: set[str] = set()
    takeovers = {f["req"]: (t, int(f["from_task"]), int(f["last_shared"])) for t, f in survivor.events("takeover")}
    print(f"round {index}: SIGKILL slm-a at +{(t_x-first)*1000:.0f} ms; slm-b declared it dead {D*1000:.1f} ms later "
          f"(bound [{(HB_TIMEOUT-HB_INTERVAL)*1000:.0f}, {HB_TIMEOUT*1000:.0f}]); {len(takeovers)} takeovers")
    print(f"  {'req':8} {'submit':>7} {'j':>2} {'from':>4} {'L ms':>7} {'L-t_c':>7} {'predicted L':>11} {'err':>6}"
          "  bound on L-t_c")
    for req in crash:
        if req not in rnd.bss.done:
            checks.append(f"round {index}: crash request {req[:8]} never completed")
            continue
        t0, L = rnd.submitted[req] - first, rnd.latency(req)
        by = rnd.bss.done[req][0][1]
        if req not in takeovers:
            where = "before the crash" if by == "slm-a" else "by slm-b after detection"
            ok = abs(L - t_c) <= tol
            print(f"  {req[:8]} {t0*1000:7.0f}  -    - {L*1000:7.1f} {(L-t_c)*1000:7.1f}"
                  f"  not a victim ({where}){'' if ok else '  !!'}")
            if not ok:
                checks.append(f"round {index}: {req[:8]} (not taken over) took {L*1000:.1f} ms, t_c {t_c*1000:.1f}")
            summary["unaffected"].append(L - t_c)
            continue
        _, from_task, j = takeovers[req]
        notices = rnd.bss.done[req]
        if j == n_tasks and notices[0][1] == "slm-a" and notices[0][0] < t_x:
            # the design's one duplicate window (README): the BSS acknowledged slm-a's notice, slm-a died before
            # its /done reached slm-b, so slm-b, told all n tasks were done, sends the notice again
            dup_window.add(req)
            print(f"  {req[:8]} {t0*1000:7.0f} {j:2d} {from_task:4d} {L*1000:7.1f} {(L-t_c)*1000:7.1f}"
                  "  completed by slm-a "
                  f"{(t_x - notices[0][0])*1000:.1f} ms before the crash, its /done lost: notice sent again "
                  f"(at-least-once window), {len(notices)} notices")
            continue
        if from_task != j + 1:
            checks.append(f"round {index}: {req[:8]} resumed at task {from_task}, last shared {j}")
        t_sub = rnd.submitted[req]
        # README's formula: L = (t_d - t0) + sum of steps j+1..n (+ per-call overhead), t_d = t_x + D
        predicted = (t_d - t_sub) + sum(steps[j:])
        err = L - predicted
        if t_sub < t_x:  # in flight at the crash: L - t_c in [t_h - T, t_h + s_{j+1}]
            lo, hi = HB_TIMEOUT - HB_INTERVAL, HB_TIMEOUT + (steps[j] if j < n_tasks else 0.0)
            summary["victims"].append(L - t_c)
        else:  # submitted after the crash, before its detection: L - t_c in [0, t_h]
            lo, hi = 0.0, HB_TIMEOUT
            summary["late"].append(L - t_c)
        ok = lo - tol <= L - t_c <= hi + tol and 0 <= err <= tol
        print(f"  {req[:8]} {t0*1000:7.0f} {j:2d} {from_task:4d} {L*1000:7.1f} {(L-t_c)*1000:7.1f}"
              f" {predicted*1000:11.1f} "
              f"{err*1000:6.1f}  [{lo*1000:.0f}, {hi*1000:.0f}]{'' if ok else '  !!'}")
        summary["err"].append(err)
        if not ok:
            checks.append(f"round {index}: victim {req[:8]} L {L*1000:.1f} ms, predicted {predicted*1000:.1f}, "
                          f"L - t_c {(L-t_c)*1000:.1f} outside [{lo*1000:.0f}, {hi*1000:.0f}] +- {tol*1000:.0f}")

    # 3. slm-a restarts and rejoins: it is the lowest id again, so it owns the new requests
    rnd.procs["slm-a"].start()
    await rnd.healthy(["slm-a"])
    await asyncio.sleep(2 * HB_INTERVAL)  # slm-b hears it again
    rejoin = [str(uuid.uuid4()) for _ in range(5)]
    for req in rejoin:
        submit_in_background(req)
        await asyncio.sleep(0.05)
    await rnd.wait_done(rejoin, 5)
    owners = {rnd.bss.done[r][0][1] for r in rejoin if r in rnd.bss.done}
    lat = [rnd.latency(r) for r in rejoin if r in rnd.bss.done]
    print(f"round {index}: after slm-a rejoined: completed by {sorted(owners)}, {spread(lat)}")
    if owners != {"slm-a"} or len(lat) != len(rejoin):
        checks.append(f"round {index}: after the rejoin, {len(lat)}/{len(rejoin)} completed, by {owners}")
    if not any(f.get("peer") == "slm-a" for _, f in survivor.events("peer_rejoined")):
        checks.append(f"round {index}: slm-b logged no peer_rejoined for slm-a")

    await asyncio.sleep(0.5)  # late duplicates would arrive now
    for req in free + crash + rejoin:
        count = len(rnd.bss.done.get(req, []))
        if req in dup_window and count == 2:
            summary["dup_window"].append(1.0)
        elif count != 1:
            checks.append(f"round {index}: request {req[:8]} completed {count} times")
    # SIGTERM: exit 0 within 1 s
    for sid, proc in rnd.procs.items():
        t = time.monotonic()
        rc = proc.stop()
        if rc != 0:
            checks.append(f"round {index}: {sid} answered SIGTERM with exit status {rc} ({time.monotonic()-t:.2f} s)")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.03, help="seconds allowed beyond each bound (default 0.03)")
    ap.add_argument("--verbose", action="store_true", help="print the instances' logs at the end")
    args = ap.parse_args()
    if not BINARY.exists():
        subprocess.run([str(HERE / "build.sh")], check=True)
    checks: list[str] = []
    summary: dict[str, list[float]] = {"t_c": [], "D": [], "victims": [], "late": [], "unaffected": [], "err": [],
                                     "dup_window": []}
    secret = os.urandom(16).hex()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for index in range(1, args.rounds + 1):
            base = f"127.{random.randint(100, 199)}.{random.randint(0, 255)}"
            bss = Bss(f"{base}.2", secret)
            await bss.start()
            rnd = Round(base, session, bss, secret)
            try:
                await one_round(rnd, index, args.tolerance, checks, summary)
            finally:
                for proc in rnd.procs.values():
                    proc.stop()
                await bss.runner.cleanup()
                if args.verbose:
                    for proc in rnd.procs.values():
                        print(f"--- {proc.sid}\n" + "\n".join(proc.lines))
            if bss.refused:
                checks.append(f"round {index}: the BSS refused {bss.refused} notices (wrong key)")
    print("\nsummary over all rounds (seconds -> ms):")
    print(f"  t_c (fault-free latency)            {spread(summary['t_c'])}")
    print(f"  detection D = t_d - t_x             {spread(summary['D'])}")
    print(f"  in-flight victims: L - t_c          {spread(summary['victims'])}")
    print(f"  submitted during detection: L - t_c {spread(summary['late'])}")
    print(f"  not taken over: L - t_c             {spread(summary['unaffected'])}")
    print(f"  victims: L - predicted              {spread(summary['err'])}")
    if summary["dup_window"]:
        print(f"  duplicates in the window notice-acked..peers-told-done: {len(summary['dup_window'])} (by design)")
    if checks:
        print(f"\nFAILED: {len(checks)} checks")
        for c in checks:
            print("  " + c)
        return 1
    print("\nOK: every request completed exactly once (but for the duplicate window above, if any); "
          "every victim within its bound")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
