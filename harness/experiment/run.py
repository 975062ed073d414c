"""One experiment end to end: bring up a design, load it, break it, measure it, check it, tear it down, and
write what was measured beside what the model says.

Files in the output folder, each written as soon as it is known, so a run killed half-way leaves valid
partial files: config.yaml (the resolved z, runtime, link backend, machine, commit), events.jsonl (the whole
history), requests.csv (a row per completion notice, as it arrives), links.csv, cpu.csv, the load
generator's own statistics, and summary.csv (one row: measured beside modelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import math
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from faults import FaultContext, FaultError, make
from harness import checker, history, model
from harness.errors import UserError
from harness.experiment import outdir, provenance
from harness.experiment.testbed import Testbed, new_run_id
from harness.experiment.warmup import prelude
from harness.history import Event, manifest, record
from harness.history.flows import Flow
from harness.links.proxyd_control import ProxyControlError
from harness.links.wiring import select_backend
from harness.measure import metrics, summary
from harness.measure.cpu import CpuSampler
from harness.measure.wire import CaptureError, CaptureUnavailable, WireCapture
from harness.plan import capacity
from harness.plan.config import Experiment, build
from harness.plan.target import PythonClient, TargetFile, experiment_for
from harness.runtime import leftovers
from harness.runtime.broker import BrokerControl
from harness.state import state_dir, write_atomic, write_json_atomic


@dataclass
class RunResult:
    out: Path
    summary: dict[str, Any]
    verdict: checker.Verdict
    events: list[Event] = field(default_factory=list)


class RequestLog:
    """requests.csv, a row per completion notice the moment it arrives."""

    COLUMNS = ("req", "submitted_t", "completed_t", "latency", "by", "nth")

    def __init__(self, path: Path, time_scale: float) -> None:
        self.fh: TextIO = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.fh)
        self.writer.writerow(self.COLUMNS)
        self.fh.flush()
        self.scale = time_scale
        self.submitted: dict[str, float] = {}
        self.completed = 0

    def __call__(self, e: Event) -> None:
        if e["svc"] != "bss" or e.get("warmup"):
            return
        if e["kind"] == "submitted":
            self.submitted.setdefault(e["req"], e["t"])
        elif e["kind"] == "completed":
            t0 = self.submitted.get(e["req"], math.nan)
            self.completed += e.get("n", 1) == 1
            self.writer.writerow([e["req"], t0, e["t"], (e["t"] - t0) / self.scale, e.get("by"), e.get("n", 1)])
            self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def write_config(out: Path, z: Experiment, run: str, extra: dict[str, Any]) -> None:
    record = {"run": run, "z": z.resolved(), **extra}
    write_atomic(out / "config.yaml", yaml.safe_dump(record, sort_keys=False))


# --- the monolith reference ------------------------------------------------------------------------------

MONOLITH_METHOD = 2  # bumped when how the reference is measured changes (2: after a warm-up), so caches refresh


def monolith_key(z: Experiment) -> str:
    """What t_m and the monolith's CPU depend on: the tasks, the emulation, the load and the time scale, and
    where it was measured (the runtime and the host: a cache shared by machines or runtimes must not mix)."""
    fields: dict[str, Any] = {k: z.resolved()[k] for k in ("n", "t_i", "time_scale", "work", "users", "warmup")}
    fields.update(method=MONOLITH_METHOD, runtime=z.runtime, host=socket.gethostname())
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def default_cache() -> Path:
    """The monolith reference cache under the harness's own state root (0700, ours), not beside --out."""
    return state_dir("cache", "monolith")


def _cached_reference(path: Path) -> dict[str, float] | None:
    """A cached reference, or None when there is none or it is not one (torn, planted, wrong shape): then it
    is measured again and the file replaced."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ref = {"t_m": float(data["t_m"]), "cpu_per_workflow": float(data["cpu_per_workflow"])}
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return ref if all(math.isfinite(v) and v >= 0 for v in ref.values()) else None


async def monolith_reference(z: Experiment, cache: Path, workdir: Path) -> dict[str, float]:
    """Measured t_m (paper s) and CPU seconds per workflow of the monolith for the same tasks, cached per z
    (written whole or not at all, and checked when read: a torn file is measured again, never trusted)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"monolith-{monolith_key(z)}.json"
    cached = _cached_reference(path)
    if cached is not None:
        return cached
    zm = build({**z.resolved(), "design": "monolith", "mechanism": "state-sharing", "fault": "none",
                "worker_replicas": None, "requests": min(z.requests, 2 * z.users)})
    async with Testbed(zm, workdir) as tb:
        timeout = model.workflow_timeout(zm)
        await prelude(tb.collector, zm, builtin_warm_up(tb), timeout, say=lambda _: None)
        sampler = CpuSampler({s.id: tb.runtime.pid(s.id) for s in tb.deployment.services})  # type: ignore[union-attr]
        sampler.start()
        reqs = await tb.bss.drive(zm.requests, users=zm.users, timeout=timeout)
        await tb.bss.wait_all(reqs, timeout=30)
        cpu = await sampler.stop()
    lat = checker.latencies(history.measured(tb.collector.events))
    ref = {"t_m": sum(lat.values()) / len(lat) / zm.time_scale if lat else math.nan,
           "cpu_per_workflow": metrics.cpu_per_workflow(cpu, {"monolith": "monolith"}, len(lat))}
    write_json_atomic(path, ref, indent=None)
    return ref


# --- the experiment -------------------------------------------------------------------------------------

def builtin_warm_up(tb: Testbed) -> Callable[[int, int, float], Awaitable[int]]:
    async def warm(n: int, users: int, timeout: float) -> int:
        reqs = await tb.bss.drive(n, users=users, timeout=timeout, warmup=True)
        await tb.bss.wait_all(reqs, timeout=timeout)
        return sum(tb.bss.completions.get(r, 0) > 0 for r in reqs)

    return warm


async def drive_load(tb: Testbed, load: str, arm: Callable[[], Awaitable[None]],
                     say: Callable[[str], None] = print) -> dict[str, Any]:
    """Settle and warm up (harness.experiment.warmup), `arm` the fault, then run the measured load to completion;
    returns the load generator's own figures."""
    z = tb.z
    per_workflow = model.workflow_timeout(z)
    timeout = 120 + 20 * model.evaluate(z).t_c * z.time_scale * (z.requests / max(1, z.users) + 2)
    if tb.target is not None and isinstance(tb.target.client, PythonClient):
        return await drive_client(tb, tb.target, arm, per_workflow, say)
    if load == "locust":
        from harness.load.locust_runner import LocustLoad

        runner = LocustLoad.for_testbed(tb, timeout=per_workflow, gate=True)
        try:
            await runner.start()
            await runner.ready()
            await prelude(tb.collector, z, runner.warm_up, per_workflow, say=say)
            await arm()
            await runner.go()
        except BaseException:
            await runner.stop(grace=1.0)
            raise
        result = await runner.wait(timeout)
        return {"load": "locust", **result.as_dict()}
    await prelude(tb.collector, z, builtin_warm_up(tb), per_workflow, say=say)
    await arm()
    reqs = await tb.bss.drive(z.requests, users=z.users, timeout=timeout)
    await tb.bss.wait_all(reqs, timeout=timeout)
    return {"load": "builtin", "requests": len(reqs)}


async def drive_client(tb: Testbed, target: TargetFile, arm: Callable[[], Awaitable[None]], per_workflow: float,
                       say: Callable[[str], None]) -> dict[str, Any]:
    """A target's python client (harness.load.client_load) as the load: opened before the warm-up, closed
    always; each workflow waits at most the target's `client_options.deadline` (wall s), else the model's."""
    from harness.load.client_load import ClientLoad

    assert tb.deployment is not None
    deadline = float(target.client_options.get("deadline", per_workflow))
    client = ClientLoad(target, tb.deployment, tb.collector, tb.run, tb.workdir / "client")
    try:
        await client.open()
        await prelude(tb.collector, tb.z, client.warm_up, deadline, say=say)
        await arm()
        completed = await client.drive(tb.z.requests, tb.z.users, deadline)
    finally:
        await client.close()
    return {"load": f"client {target.client.python}" if isinstance(target.client, PythonClient) else "client",
            "requests": tb.z.requests, "completed": completed}


async def experiment(z: Experiment, out: Path, *, load: str = "locust", cache: Path | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     say: Callable[[str], None] = print, fresh: bool = False) -> RunResult:
    """Run z once into `out` (a new folder: outdir.claim; `fresh`: the caller made it, empty, for this run);
    see the module docstring for what is written. A run refused before its load started (a UserError: the
    error says why) removes the folder it made, so a refused start leaves no partial folder; a testbed that
    failed keeps its folder for the logs, and a run that fails later keeps what it recorded."""
    z, target = experiment_for(z)  # a target file: read, merged and checked (one line, exit 2) before anything
    capacity.check_run(z)  # what this machine can run (and fault_at: every belongs to a sweep), before anything
    out = out.absolute()  # every child process gets absolute paths, whatever the working directory
    made = outdir.claim(out) or fresh
    started: list[bool] = []
    try:
        return await _experiment(z, target, out, load=load, cache=cache, on_progress=on_progress, say=say,
                                 started=started)
    except UserError:
        if made and not started:
            shutil.rmtree(out, ignore_errors=True)
        raise


async def _experiment(z: Experiment, target: TargetFile | None, out: Path, *, load: str, cache: Path | None,
                      on_progress: Callable[[int, int], None] | None, say: Callable[[str], None],
                      started: list[bool]) -> RunResult:
    run = new_run_id()
    if target is not None and isinstance(target.client, PythonClient):
        from harness.load.client_load import client_class

        client_class(target)  # importable, and a class with open, invoke, close: before anything starts
    found = leftovers.processes(orphans=True, session=leftovers.this_session())
    if found:
        say(f"found {len(found)} leftover process(es) of crashed runs: ending them")
        leftovers.end(found)
    stale = leftovers.docker_objects(orphans=True, session=leftovers.this_session()) if z.runtime != "local" else []
    if stale:
        say(f"found {len(stale)} leftover container(s)/network(s) of crashed runs: removing them")
        leftovers.remove_docker(stale)
    backend, why = select_backend(z.link_backend, z.runtime)
    stamp = provenance.stamp()
    requests_csv = RequestLog(out / "requests.csv", z.time_scale)
    http = target is None or target.client == "http"
    tb = Testbed(z, out, run=run, links_backend=backend, external_bss=load == "locust" and http, target=target)
    capture, capture_note = start_capture(tb, out)
    tb.on_teardown.append(lambda: stop_capture(capture))  # again in `finally`: a stopped capture keeps its flows
    stamp["wire_capture"] = capture_note
    extra: dict[str, Any] = {}
    if target is not None:  # the file itself, as read, into the run folder: the record of what ran
        write_atomic(out / record.TARGET, Path(str(z.target)).read_text(encoding="utf-8"))
        extra["target"] = {"name": target.name, "file": z.target, "instrumented": target.instrumented}
    write_config(out, z, run, {"runtime": z.runtime, "link_backend": backend, "link_backend_why": why,
                               "load": load if http else "client", **extra, **stamp})
    tb.collector.subscribe(requests_csv)
    if on_progress:
        tb.collector.subscribe(lambda e: on_progress(requests_csv.completed, z.requests)
                               if e["kind"] == "completed" and not e.get("warmup") else None)
    counters: dict[str, dict[str, Any]] = {}
    cpu: dict[str, tuple[float, float]] = {}
    host_cpu: dict[str, Any] = {}  # the host's headroom over the measured load (the saturation guard)
    load_stats: dict[str, Any] = {}
    refused: dict[str, int] = {}
    harness_cpu = time.process_time()
    wall = time.monotonic()
    try:
        async with tb:
            assert tb.deployment is not None
            record.save_deployment(out, tb.deployment)  # as soon as it is known, like every file of the run
            sampler = CpuSampler({s.id: tb.runtime.pid(s.id) for s in tb.deployment.services})
            for name, pid in (tb.wiring.pids() if tb.wiring else {}).items():
                sampler.add(name, pid)
            sampler.start()
            tb.collector.subscribe(lambda e: sampler.sample() if e["kind"] == "fault" and e.get("action") == "kill"
                                   else None)  # the victim's counters die with it: read them first
            if tb.broker is not None:
                sampler.add("broker", tb.broker.pid())
            ctx = FaultContext(z, tb.deployment, tb.collector, BrokerControl(tb.runtime, tb.broker), tb.wiring,
                               target_index=max(1, min(z.requests, z.users + 1)), broker=tb.broker, model=model)
            try:
                fault = make(ctx)
            except FaultError as err:  # the faults' own error: to the CLI a user's, one line and exit code 2
                raise UserError(str(err)) from None
            injector: asyncio.Task | None = None
            armed = False

            async def arm() -> None:  # after the warm-up: the fault aims at the measured load only
                nonlocal injector, armed
                started.append(True)
                sampler.mark()  # CPU is counted for the measured load only
                if fault:
                    armed = True
                    try:
                        await fault.setup()
                    except FaultError as err:
                        raise UserError(str(err)) from None
                    fault.start_clock()
                    injector = asyncio.create_task(fault.inject())

            try:
                load_stats = await drive_load(tb, load, arm, say=say)
                await asyncio.sleep(max(0.2, 3 * z.time_scale * (z.t_h or 0)))  # let late duplicates land
            finally:
                if injector and not injector.done():
                    injector.cancel()
                    tb.collector.emit("harness", "fault_missed", fault=z.fault)
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await injector
                if fault and armed:
                    await fault.heal()
                try:
                    counters = tb.wiring.counters() if tb.wiring else {}
                except ProxyControlError:  # proxyd already gone (killed with us): links.csv has no proxy counts
                    counters = {}
                cpu = await sampler.stop()
                host_cpu = sampler.host()
    finally:
        requests_csv.close()
        flows = stop_capture(capture)
        harness_share = (time.process_time() - harness_cpu) / max(1e-9, time.monotonic() - wall)
    refused = tb.refused()  # after the teardown: the services and the swarm agents report theirs as they stop
    assert tb.deployment is not None
    mono = (await monolith_reference(z, cache or default_cache(), out / "monolith") if target is None
            else {"t_m": math.nan, "cpu_per_workflow": math.nan})  # a target names no monolith of its own
    capture_stats = capture.stats() if capture is not None else {}
    if capture is not None and capture.health().startswith("INCOMPLETE"):
        say(f"wire capture {capture.health()}: the verdict is unknown")  # counted in summary.csv's history_holes
    record.save_reference(out, mono)
    record.save_counters(out, record.Counters(
        cpu=cpu, proxy=counters, harness_cpu_share=harness_share, collector_bad_lines=tb.collector.bad_lines,
        capture={**capture_stats, "flows_used": flows is not None}, host_cpu=host_cpu, refused=refused))
    write_json_atomic(out / "load.json", load_stats)
    # sealed as it closes: what the run expected and the digest of every record file (harness.history.manifest)
    manifest.seal(out, {"requests": z.requests, "history_lines": _lines(out / "events.jsonl")})
    # the run's own figures come from its folder, exactly as `harness analyse` recomputes them later
    tables = summary.derive(record.load(out))
    summary.write(tables, out)
    return RunResult(out, tables.summary, tables.verdict, history.measured(tb.collector.events))


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def start_capture(tb: Testbed, out: Path) -> tuple[WireCapture | None, str]:
    """Count bytes on the wire for the run's whole address block, or say why that is not possible here."""
    iface = tb.runtime.capture_iface  # docker: the run's bridge, which exists from prepare()
    capture = WireCapture(f"{tb.runtime.block}.0/24", out / "wire.csv", env=tb.runtime.env({}), iface=iface)
    if iface != "lo":  # the bridge exists once the testbed has prepared its network: start the capture then
        def start() -> None:
            with contextlib.suppress(CaptureUnavailable):
                capture.start()

        tb.on_prepared.append(start)
        return capture, capture.note
    try:
        capture.start()
    except CaptureUnavailable as exc:
        return None, f"unavailable: {exc}"
    return capture, capture.note


def stop_capture(capture: WireCapture | None) -> list[Flow] | None:
    if capture is None:
        return None
    try:
        return capture.stop()
    except CaptureError:
        return None
