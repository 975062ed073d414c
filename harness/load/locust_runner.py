"""Harness side of the Locust load: start `locust --headless` in its own process, wait, read its statistics.

Never imports locust (Locust monkey-patches the standard library with gevent on import). The Locust process
runs harness/load/locustfile.py, which is the BSS for the run: the services must have been planned with the
BSS address given here (`Testbed(..., external_bss=True)` and its `bss_address`). It streams the BSS's `submitted` /
`completed` events into the harness's collector, so `harness.checker` judges the run as usual.

Figures come from Locust's `--json-file` output, written once at shutdown from the final in-memory statistics
(exact; `_stats.csv` is rewritten only every couple of seconds and lags the real totals), plus the
locustfile's own exact counts (`<prefix>_bss.json`). Locust's CSV and JSON files are left in `out_dir`.

    async with Testbed(z, workdir, external_bss=True) as tb:
        result = await LocustLoad.for_testbed(tb).run()      # tb.z's requests, users or rate
    # or explicitly:
        load = LocustLoad(tb.deployment.entry, tb.bss_address, tb.collector.address, workdir, requests=30,
                          users=5, start_process=tb.runtime.start_process, run=tb.run)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict

import aiohttp

from harness.errors import ManobenchError
from harness.runtime.local import LocalRuntime
from protocol import auth

if TYPE_CHECKING:
    from harness.history.collector import Collector
    from harness.load.locustfile import LoadConfig  # not imported at run time: it patches with gevent
    from harness.plan.config import Experiment
    from harness.plan.deploy import Deployment
    from harness.runtime.contract import Runtime

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CONFIG_ENV = "MANOBENCH_LOAD"
STARTUP_ALLOWANCE = 30.0  # seconds a default wait allows for Locust's start-up (imports, gevent patching)

class StatsEntry(TypedDict, total=False):
    """One entry of Locust's `--json-file` (one per request type and name), as far as it is read here."""

    method: str
    name: str
    num_requests: int
    num_none_requests: int
    num_failures: int
    response_times: dict[str, int]  # rounded response time (ms, as text) -> how many
    min_response_time: float | None
    max_response_time: float


class LoadTestbed(Protocol):
    """What a Locust load reads of the testbed it drives (harness.experiment.testbed.Testbed), so that load
    needs nothing of the experiment layer above it."""

    refusal_sources: dict[str, Callable[[], int]]  # the load adds its BSS's count of refused requests

    @property
    def z(self) -> Experiment: ...
    @property
    def workdir(self) -> Path: ...
    @property
    def run(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def deployment(self) -> Deployment | None: ...
    @property
    def external_bss(self) -> bool: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def collector(self) -> Collector: ...
    @property
    def bss_address(self) -> str: ...


StartProcess = Callable[[str, list[str], dict[str, str]], Awaitable[asyncio.subprocess.Process]]


@dataclass
class LocustResult:
    """Locust's final statistics for WORKFLOW/instantiate (ms), plus the locustfile's exact counts."""

    requests: int  # workflows reported to Locust (completed + failed)
    failures: int  # timed out, or accepted by no entry, within the timeout
    median_ms: float
    p95_ms: float
    max_ms: float
    exit_code: int  # 0: the load ran to its end by itself
    duration: float  # seconds the Locust process ran (start-up included)
    # the locustfile's summary as it wrote it (harness.load.locustfile.Summary: completed, timed_out, ...); {}
    # when it wrote none
    bss: dict[str, object] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # what Locust left in out_dir: json, stats_csv, ...

    @property
    def offered_rate(self) -> float | None:
        """Submissions per second actually achieved, (N - 1) / (last - first submission)."""
        rate = self.bss.get("offered_rate")
        return float(rate) if isinstance(rate, int | float) else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: every field, plus offered_rate."""
        return {**asdict(self), "offered_rate": self.offered_rate}


class LocustLoadError(ManobenchError):
    """Locust did not finish by itself with exit code 0 (timed out, crashed, or was stopped)."""

    def __init__(self, message: str, result: LocustResult | None, log_tail: str = "") -> None:
        super().__init__(message + (f"\n{log_tail}" if log_tail else ""))
        self.result = result
        self.log_tail = log_tail


def free_address(host: str = "127.0.0.1") -> str:
    """A "host:port" nobody listens on right now (on a run's own loopback address, nobody else will)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return f"{host}:{sock.getsockname()[1]}"


def standalone_starter(workdir: Path, run: str) -> StartProcess:
    """A `start_process` for use without a testbed: a LocalRuntime's own, so the same conventions hold (the
    run's labels in the environment, own session, log in workdir/logs/<name>.log)."""
    return LocalRuntime(run, workdir).start_process


class LocustLoad:
    """One headless Locust run against `entry`, with its BSS listening on `bss`.

    mode "closed": `users` users, each submitting and waiting for completion (or `timeout`), with no pause.
    mode "open": `rate` submissions per second overall, whatever the completions (one scheduler user).
    Either way exactly `requests` workflows are submitted and each one completes or fails by timing out.
    """

    def __init__(self, entry: Sequence[str], bss: str, collector: str | None, out_dir: Path, *,
                 requests: int, timeout: float = 30.0, mode: Literal["closed", "open"] = "closed",
                 users: int = 1, rate: float | None = None, arrivals: Literal["constant", "poisson"] = "constant",
                 seed: int | None = None, linger: float = 0.2, entry_bytes: int = 0, gate: bool = False,
                 start_process: StartProcess | None = None, name: str = "locust", run: str | None = None,
                 secret: str | None = None) -> None:
        """`secret`: the run's secret (protocol.auth), handed to Locust's BSS in its environment only."""
        if requests < 1:
            raise ValueError("requests must be >= 1")
        if mode not in ("closed", "open"):
            raise ValueError(f"mode must be 'closed' or 'open', not {mode!r}")
        if mode == "open" and not (rate and rate > 0):
            raise ValueError("open mode needs rate > 0")
        if not entry:
            raise ValueError("no entry address")
        self.entry, self.bss, self.collector = list(entry), bss, collector
        self.out_dir = Path(out_dir)
        self.requests, self.timeout, self.mode = requests, timeout, mode
        self.users = 1 if mode == "open" else max(1, users)
        self.rate, self.arrivals, self.seed, self.linger = rate, arrivals, seed, linger
        self.entry_bytes = entry_bytes
        self.gate = gate
        self.secret = secret
        self.name = name
        self.run_id = run or os.urandom(6).hex()
        self.start_process = start_process or standalone_starter(self.out_dir, self.run_id)
        self.prefix = self.out_dir / name
        self.proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0

    @classmethod
    def for_testbed(cls, tb: LoadTestbed, *, timeout: float | None = None, gate: bool = False) -> LocustLoad:
        """The load of the testbed's experiment z against it, live (`Testbed(z, ..., external_bss=True)`):
        z.requests workflows, open loop at z.rate if set, else closed loop with z.users; Locust's files and log
        in the testbed's workdir (the run folder). `timeout` per workflow, wall seconds; default 60 s plus 10
        modelled workflow times (the model's t_c, scaled); `gate`: wait for `go()` (after a warm-up)."""
        z, out_dir = tb.z, tb.workdir
        if tb.deployment is None:
            raise RuntimeError("the testbed is not up")
        if not tb.external_bss:
            raise RuntimeError("the testbed runs its own BSS: create it with external_bss=True")
        if timeout is None:
            from harness import model

            timeout = model.workflow_timeout(z)
        rate = z.rate
        load = cls(tb.deployment.entry, tb.bss_address, tb.collector.address, out_dir, requests=z.requests,
                   timeout=timeout, mode="open" if rate else "closed", users=z.users, rate=rate, seed=z.seed,
                   entry_bytes=tb.deployment.entry_bytes, gate=gate, start_process=tb.runtime.start_process,
                   run=tb.run, secret=tb.secret)
        tb.refusal_sources["bss"] = load.refused
        return load

    # -- what is started --------------------------------------------------------------------------------

    def config(self) -> LoadConfig:
        return {
            "entry": self.entry, "bss": self.bss, "collector": self.collector, "requests": self.requests,
            "timeout": self.timeout, "mode": self.mode, "rate": self.rate, "users": self.users,
            "arrivals": self.arrivals, "seed": self.seed, "linger": self.linger, "entry_bytes": self.entry_bytes,
            "gate": self.gate, "parent": os.getpid(), "secret": self.secret,
            "summary": str(self.summary_path),
        }

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "-u", str(self.users), "-r", str(max(self.users, 1) * 10),  # every user within 0.1 s
            "--csv", str(self.prefix), "--json-file", str(self.prefix),  # Locust adds .json / _stats.csv ...
            "--only-summary", "--loglevel", "WARNING",
        ]

    @property
    def json_path(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".json")

    @property
    def summary_path(self) -> Path:
        return self.prefix.with_name(self.prefix.name + "_bss.json")

    def default_wait(self) -> float:
        """Longest the load can legitimately take, plus start-up: the bound `wait()` uses by default."""
        if self.mode == "open":
            assert self.rate
            busy = self.requests / self.rate + self.timeout
        else:
            busy = math.ceil(self.requests / self.users) * self.timeout
        return STARTUP_ALLOWANCE + busy + self.linger + 10.0

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> None:
        assert self.proc is None, "one LocustLoad runs once"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.json_path, self.summary_path):
            stale.unlink(missing_ok=True)
        self._started_at = time.monotonic()
        self.proc = await self.start_process(self.name, self.argv(), {CONFIG_ENV: json.dumps(self.config())})

    async def ready(self, timeout: float = STARTUP_ALLOWANCE) -> None:
        """Until Locust's BSS answers /health (users start right after): raises if Locust exited first."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise LocustLoadError(f"locust exited with {self.proc.returncode} before it was ready", None)
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                    async with session.get(f"http://{self.bss}/health", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise TimeoutError(f"Locust's BSS not listening on {self.bss} after {timeout:g} s")

    def refused(self) -> int:
        """Requests Locust's BSS answered 403 (its summary's count; 0 before it wrote one)."""
        try:
            summary = json.loads(self.summary_path.read_text())
        except (OSError, ValueError):
            return 0
        refused = summary.get("refused", 0) if isinstance(summary, dict) else 0
        return refused if isinstance(refused, int) else 0

    async def _post(self, path: str, body: dict[str, float], timeout: float) -> dict[str, int | bool]:
        """POST to Locust's BSS with the harness's control key: its answer ({"n", "completed"} or {"ok"})."""
        headers = {auth.HEADER: auth.key(self.secret, auth.CONTROL)} if self.secret else {}
        async with aiohttp.ClientSession() as session, session.post(
                f"http://{self.bss}{path}", json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def warm_up(self, n: int, users: int, timeout: float) -> int:
        """n warm-up workflows through Locust's BSS (gate=True, before go()); how many completed in time."""
        assert self.gate, "warm-up needs gate=True: the load would not wait for it"
        reply = await self._post("/warmup", {"n": n, "users": users, "timeout": timeout}, timeout * (n + 1) + 10)
        return int(reply["completed"])

    async def go(self) -> None:
        """Open the gate: the users start submitting the N measured workflows."""
        await self._post("/go", {}, 10.0)

    async def wait(self, timeout: float | None = None) -> LocustResult:
        """Until Locust exits by itself. On timeout, cancellation or error it is stopped (SIGTERM, so it still
        writes its statistics, then SIGKILL) before this returns or raises: it is never left behind."""
        assert self.proc is not None, "start() first"
        limit = self.default_wait() if timeout is None else timeout
        try:
            await asyncio.wait_for(self.proc.wait(), limit)
        except TimeoutError:
            await self.stop()
            raise LocustLoadError(f"locust still running after {limit:g} s: stopped", self._result_or_none(),
                                  self.log_tail()) from None
        except BaseException:
            await self.stop(grace=1.0)
            raise
        result = self._result_or_none()
        if self.proc.returncode != 0 or result is None:
            raise LocustLoadError(f"locust exited with {self.proc.returncode}", result, self.log_tail())
        return result

    async def run(self, timeout: float | None = None) -> LocustResult:
        """start() then wait(); whatever happens, no Locust process outlives this call."""
        try:
            await self.start()
        except BaseException:
            await self.stop(grace=1.0)
            raise
        return await self.wait(timeout)

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM (Locust writes its statistics and exits), SIGKILL after `grace`, and reap. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.returncode is None:
                self._signal(proc, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), grace)
        finally:
            if proc.returncode is None:
                self._signal(proc, signal.SIGKILL)  # even if cancelled again while waiting above
        await proc.wait()

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        """To Locust's whole process group when it leads its own (start_new_session), else to it alone."""
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    # -- results ----------------------------------------------------------------------------------------

    def log_tail(self, lines: int = 20) -> str:
        path = self.out_dir / "logs" / f"{self.name}.log"
        if not path.exists():  # a LocalRuntime logs to its own workdir/logs
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def files(self) -> dict[str, str]:
        names = {"json": self.json_path, "bss": self.summary_path}
        for suffix in ("stats", "stats_history", "failures", "exceptions"):
            names[f"{suffix}_csv"] = self.prefix.with_name(f"{self.prefix.name}_{suffix}.csv")
        return {key: str(path) for key, path in names.items() if path.exists()}

    def _result_or_none(self) -> LocustResult | None:
        if not self.json_path.exists():
            return None
        try:
            entries = json.loads(self.json_path.read_text())
        except json.JSONDecodeError:
            return None
        summary: dict[str, object] = {}
        if self.summary_path.exists():
            with contextlib.suppress(json.JSONDecodeError):
                summary = json.loads(self.summary_path.read_text())
        assert self.proc is not None
        return parse_stats(entries, exit_code=self.proc.returncode if self.proc.returncode is not None else -1,
                           duration=time.monotonic() - self._started_at, bss=summary, files=self.files())


def percentile(response_times: dict[float, int], count: int, percent: float) -> float:
    """Locust's own percentile over its (rounded) response-time histogram (stats.calculate_response_time_percentile)."""
    wanted = int(count * percent)
    seen = 0
    for value in sorted(response_times, reverse=True):
        seen += response_times[value]
        if count - seen <= wanted:
            return value
    return 0.0


def parse_stats(entries: list[StatsEntry], *, exit_code: int, duration: float, bss: dict[str, object] | None = None,
                files: dict[str, str] | None = None, method: str = "WORKFLOW", name: str = "instantiate"
                ) -> LocustResult:
    """LocustResult from Locust's `--json-file` list of stats entries (one per request type and name)."""
    entry = next((e for e in entries if e.get("method") == method and e.get("name") == name), None)
    if entry is None:
        return LocustResult(0, 0, 0.0, 0.0, 0.0, exit_code, duration, bss or {}, files or {})
    times = {float(k): int(v) for k, v in (entry.get("response_times") or {}).items()}
    count = int(entry["num_requests"]) - int(entry.get("num_none_requests") or 0)
    top = float(entry.get("max_response_time") or 0.0)
    low = float(entry.get("min_response_time") or 0.0)
    median = min(max(percentile(times, count, 0.5), low), top) if times else 0.0
    p95 = min(percentile(times, count, 0.95), top) if times else 0.0
    return LocustResult(requests=int(entry["num_requests"]), failures=int(entry["num_failures"]), median_ms=median,
                        p95_ms=p95, max_ms=top, exit_code=exit_code, duration=duration, bss=bss or {},
                        files=files or {})


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.load.locust_runner --entry H:P [--entry ...] --bss H:P ...`: one standalone run
    against an already running design (its services sending completions to --bss); prints the result."""
    p = argparse.ArgumentParser(prog="python -m harness.load.locust_runner", description=main.__doc__)
    p.add_argument("--entry", action="append", required=True, help="entry address host:port (repeat)")
    p.add_argument("--bss", required=True, help="host:port the Locust BSS listens on for /complete")
    p.add_argument("--collector", default=None, help="host:port of the event collector (default: events to log)")
    p.add_argument("--out", type=Path, required=True, help="directory for Locust's CSV/JSON files and the log")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per workflow")
    p.add_argument("--mode", choices=["closed", "open"], default="closed")
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--rate", type=float, default=None, help="open loop: submissions per second")
    p.add_argument("--arrivals", choices=["constant", "poisson"], default="constant")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--entry-bytes", type=int, default=0, help="pad each request body to this many bytes")
    args = p.parse_args(argv)
    load = LocustLoad(args.entry, args.bss, args.collector, args.out, requests=args.requests, timeout=args.timeout,
                      mode=args.mode, users=args.users, rate=args.rate, arrivals=args.arrivals, seed=args.seed,
                      entry_bytes=args.entry_bytes)
    try:
        result = asyncio.run(load.run())
    except LocustLoadError as error:
        print(json.dumps({"error": str(error), "result": error.result.as_dict() if error.result else None}, indent=1))
        return 1
    print(json.dumps(result.as_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
