"""The BSS as a Locust load generator: run by `locust -f` in its own process, never imported by the harness.

Each simulated BSS user does what harness/load/bss.py does: it submits an instantiation request (a fresh UUID4)
as `POST http://<entry>/request` `{"req": ...}` (padded to `entry_bytes`) to EVERY entry address, retrying
every 50 ms until at least one answers 2xx, then waits for that workflow's completion notice. The workflow
is reported to Locust as one request event (type WORKFLOW, name `instantiate`, response time = ms from
submission to the first completion notice), so Locust's own statistics are workflow latencies. A workflow
with no completion within `timeout` seconds of its submission (or that no entry accepted in that time) is
reported as a Locust failure with its elapsed time (~ the timeout: a censored latency, as Locust does for an
HTTP timeout) and is never waited for again; a notice arriving later is still recorded in the history, where
the checker counts it.

The BSS's completion endpoint lives in this process: a gevent WSGI server on the BSS address the services
were given, answering `POST /complete` `{"req", "by"}` (400 on a malformed body, recorded as `bad_message`).
The BSS's events go to the harness's collector as JSON lines over TCP, in exactly the format of
targets/events.py (`{"t": time.monotonic(), "wall": time.time(), "svc": "bss", "kind": ...}`): `submitted`
{req, to} and `completed` {req, by, n} (n = this is the n-th notice for req; duplicates are recorded, never
merged). So harness.checker judges a Locust run like a harness/load/bss.py run. The workflow latency given to
Locust is computed from the very `t` values of those two events, so it equals `checker.latencies`.

Configuration: the JSON object in MANOBENCH_LOAD, set by harness/load/locust_runner.py:
  entry      list of "host:port" entry addresses             bss        "host:port" to serve /complete on
  entry_bytes  size the request body is padded to (protocol.messages.padded, as harness/load/bss.py: P_{0,1} kB of
             state on the distributed chain's hop 0; 0 = minimal)
  collector  "host:port" of the collector (null: events are written to stdout)
  requests   N, the number of workflows to submit            timeout    seconds per workflow
  mode       "closed": every user submits, waits for the completion (or timeout), submits the next, with no
             wait time; "open": submissions at `rate` per second overall, whatever the completions
  rate       open loop: submissions per second              arrivals   open loop: "constant" | "poisson"
  seed       open loop, poisson: the random seed             linger     seconds to keep listening after the
  parent     pid of the launcher: the load stops if it dies             last workflow (late duplicates)
  summary    path of a JSON file for this side's own exact counts (optional)
  secret     the run's secret (protocol.auth; null: nothing is checked): the events go with the BSS's key, a
             `/complete` counts only with its sender's key, `/go` and `/warmup` only with the harness's
             control key; anything else is answered 403 and counted (`refused` in the summary). It comes in
             this environment variable, never on the command line.
  gate       true: no user submits before the harness says `POST /go`; before that it may ask for warm-up
             workflows, `POST /warmup {"n", "users", "timeout"}`, answered when they are all done. Those are
             recorded with `warmup: true` on their `submitted` and `completed` events (the checker leaves
             them out) and are neither reported to Locust nor counted towards N.

The run stops by itself once exactly N submissions have completed or timed out (plus `linger`): a greenlet
calls `environment.runner.quit()`, Locust writes its final statistics (`--json-file`, `--csv`) and the
process exits with code 0. Exit code 3 means it was stopped before all N were accounted for (SIGTERM from the
launcher, or the launcher died), 2 an exception escaped a user, 4 a bad configuration or a BSS address that
cannot be bound (nothing was submitted).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from typing import TypedDict
from wsgiref.types import StartResponse, WSGIEnvironment

import gevent
import urllib3
from gevent import pywsgi
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from locust import User, constant, events, task
from locust.env import Environment

from protocol import auth
from protocol.events import EventSink
from protocol.messages import fenced_refusal, padded  # the body and the completion rule of harness/load/bss.py

log = logging.getLogger("manobench.load")
CONFIG_ENV = "MANOBENCH_LOAD"
RETRY_EVERY = 0.05  # as harness/load/bss.py: a request no entry accepted is sent again 50 ms later
EXIT_SETUP = 4  # exit code: bad configuration, or the BSS address cannot be bound
POST_TIMEOUT = 10.0  # as harness/load/bss.py, but never past the workflow's own deadline


class LoadConfig(TypedDict, total=False):
    """The load as harness/load/locust_runner.py hands it over (MANOBENCH_LOAD, JSON): who to send to, how many,
    how fast, where to listen for completions and where to write the summary."""

    entry: list[str]  # the entries' "host:port"
    bss: str  # where the completion server listens
    collector: str | None
    requests: int  # N
    timeout: float  # per workflow, wall seconds
    mode: str  # "closed" | "open"
    rate: float | None  # open loop: submissions per second
    users: int
    arrivals: str  # "constant" | "poisson"
    seed: int | None
    linger: float  # seconds late duplicate notices still reach the history
    entry_bytes: int  # P_a, the padded request body
    gate: bool  # wait for the harness's /go
    parent: int  # the launcher's pid: the load stops once it is gone
    secret: str | None  # the run's secret (protocol.auth)
    summary: str  # where the summary (`Bss.summary`) is written at the end


class Outcome(TypedDict):
    """How the load's workflows ended, each counted once towards N."""

    completed: int
    timed_out: int
    not_accepted: int
    error: int


class Summary(Outcome):
    """The load's exact counts, written at its end (LoadConfig's `summary`) and read by the launcher."""

    requests: int
    issued: int
    accounted: int
    first_submit: float | None
    last_submit: float | None
    offered_rate: float | None  # (issued - 1) / (last - first submission)
    completions: int
    duplicates: int
    events_lost: int
    finished: bool
    refused: int


class WorkflowTimeout(Exception):
    """No completion notice within the timeout (the message is constant, so Locust groups these failures)."""


class NotAccepted(Exception):
    """No entry answered 2xx to the request before its timeout ran out."""


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Sink(EventSink):
    """The services' EventSink (same JSON lines, sent before the caller goes on), made safe across greenlets:
    under a lock, so concurrent users never interleave lines."""

    def __init__(self, collector: str | None, svc: str = "bss", secret: str | None = None) -> None:
        self.lock = Semaphore()
        super().__init__(collector, svc, run="", secret=secret)

    def emit(self, kind: str, **fields: object) -> dict[str, object]:
        with self.lock:
            return super().emit(kind, **fields)

    def stamp(self, kind: str, **fields: object) -> float:
        """Send one event and return its `t` (CLOCK_MONOTONIC seconds): when a workflow was submitted."""
        t = self.emit(kind, **fields)["t"]
        assert isinstance(t, float)
        return t

    def close(self) -> None:
        with self.lock:
            super().close()


class Bss:
    """State of the whole load: the completion server, who waits for what, and the count towards N."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.entry: list[str] = list(cfg["entry"])
        if not self.entry:
            raise ValueError("no entry address to submit requests to")
        self.total = int(cfg["requests"])
        self.timeout = float(cfg.get("timeout", 30.0))
        self.mode = cfg.get("mode", "closed")
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode must be 'closed' or 'open', not {self.mode!r}")
        self.rate = float(cfg.get("rate") or 0)
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("open mode needs a positive rate")
        self.linger = float(cfg.get("linger", 0.2))
        self.entry_bytes = int(cfg.get("entry_bytes") or 0)
        self.secret: str | None = cfg.get("secret")
        self.refused = 0  # requests answered 403 for want of the right key
        self.sink = Sink(cfg.get("collector"), secret=auth.key(self.secret, auth.BSS) if self.secret else None)
        self.waiting: dict[str, AsyncResult] = {}
        self.completions: dict[str, int] = {}
        self.epochs: dict[str, int] = {}  # req -> highest epoch of a completion notice (fenced)
        self.issued = 0
        self.accounted = 0
        self.outcome: Outcome = {"completed": 0, "timed_out": 0, "not_accepted": 0, "error": 0}
        self.first_submit: float | None = None
        self.last_submit: float | None = None
        self.done = Event()
        self.go = Event()
        if not cfg.get("gate"):
            self.go.set()
        self.warm: set[str] = set()  # warm-up requests: not the load's, marked in the history
        self.scheduler_taken = False
        self.environment: Environment | None = None  # Locust's, once its init event is fired
        self.http = urllib3.PoolManager(num_pools=max(8, 2 * len(self.entry)), maxsize=256, block=False,
                                        retries=False)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # "pool is full" under open load
        self.server = pywsgi.WSGIServer(hostport(cfg["bss"]), self.app, log=None)

    # -- the completion endpoint ------------------------------------------------------------------------

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        if path == "/health" and method == "GET":
            return self._reply(start_response, "200 OK", {"ok": True, "waiting": len(self.waiting)})
        if path in ("/go", "/warmup") and not self._signed(environ, auth.CONTROL):
            return self._reply(start_response, "403 Forbidden", {"error": "the harness's control key is needed"})
        if path == "/go" and method == "POST":
            self.go.set()
            return self._reply(start_response, "200 OK", {"ok": True})
        if path == "/warmup" and method == "POST":
            try:
                body = json.loads(environ["wsgi.input"].read())
                n, users, timeout = int(body["n"]), int(body.get("users", 1)), float(body.get("timeout", 30))
            except (ValueError, KeyError, TypeError, AttributeError):
                return self._reply(start_response, "400 Bad Request", {"error": "expected {n, users, timeout}"})
            return self._reply(start_response, "200 OK", {"n": n, "completed": self.warm_up(n, users, timeout)})
        if path != "/complete":
            return self._reply(start_response, "404 Not Found", {"error": "not found"})
        if method != "POST":
            return self._reply(start_response, "405 Method Not Allowed", {"error": "POST only"})
        try:
            body = json.loads(environ["wsgi.input"].read())
            req, by, epoch = str(body["req"]), str(body.get("by", "?")), body.get("epoch")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            req, by, epoch = "", None, None
        if not self._signed(environ, by):
            return self._reply(start_response, "403 Forbidden", {"error": "not from a service of this run"})
        if by is None:
            self.sink.emit("bad_message", path="/complete")
            return self._reply(start_response, "400 Bad Request", {"error": "expected {req, by}"})
        warm = {"warmup": True} if req in self.warm else {}
        fenced: dict[str, int] = {}
        if isinstance(epoch, int) and not isinstance(epoch, bool):  # the fenced mechanism: a fenced resource
            refused = fenced_refusal(self.epochs.get(req, 0), epoch, req in self.completions)
            self.epochs[req] = max(self.epochs.get(req, 0), epoch)
            if refused is not None:
                self.sink.emit("completion_refused", req=req, by=by, epoch=epoch, reason=refused, **warm)
                return self._reply(start_response, "200 OK", {"ok": True, "refused": refused,
                                                              "epoch": self.epochs[req]})
            fenced = {"epoch": epoch}
        self.completions[req] = n = self.completions.get(req, 0) + 1
        event = self.sink.emit("completed", req=req, by=by, n=n, **warm, **fenced)
        waiter = self.waiting.get(req)
        if waiter is not None and not waiter.ready():
            waiter.set(event["t"])
        return self._reply(start_response, "200 OK", {"ok": True})

    def _signed(self, environ: WSGIEnvironment, name: str | None) -> bool:
        """Whether the request carries `name`'s key (always, without a secret); counts a refusal."""
        if self.secret is None:
            return True
        given = environ.get("HTTP_" + auth.HEADER.upper().replace("-", "_"))
        if name is not None and auth.matches(auth.key(self.secret, name), given):
            return True
        self.refused += 1
        return False

    @staticmethod
    def _reply(start_response: StartResponse, status: str, body: dict[str, object]) -> list[bytes]:
        raw = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))])
        return [raw]

    # -- warm-up ----------------------------------------------------------------------------------------

    def warm_up(self, n: int, users: int, timeout: float) -> int:
        """n workflows by `users` greenlets, each waited for: the connections, the code paths and the
        proxies are then warm when the measured load starts. Returns how many completed in time."""
        todo = list(range(n))
        completed = 0

        def user() -> None:
            nonlocal completed
            while todo:
                todo.pop()
                req = str(uuid.uuid4())
                self.warm.add(req)
                waiter = self.waiting[req] = AsyncResult()
                started = self.sink.stamp("submitted", req=req, to=len(self.entry), warmup=True)
                deadline = started + timeout
                try:
                    if self.submit(req, deadline):
                        waiter.get(timeout=max(0.0, deadline - time.monotonic()))
                        completed += 1
                except gevent.Timeout:
                    pass
                finally:
                    self.waiting.pop(req, None)

        gevent.joinall([gevent.spawn(user) for _ in range(max(1, min(users, n)))])
        return completed

    # -- one workflow -----------------------------------------------------------------------------------

    def claim(self) -> bool:
        """Take one of the N submissions (greenlets switch only on I/O, so this is atomic)."""
        if self.issued >= self.total:
            return False
        self.issued += 1
        return True

    def workflow(self) -> None:
        """Submit one request, wait for its completion or timeout, report it to Locust; always accounted."""
        started = time.monotonic()
        exc: Exception | None = None
        try:
            req = str(uuid.uuid4())
            waiter = self.waiting[req] = AsyncResult()
            started = self.sink.stamp("submitted", req=req, to=len(self.entry))
            if self.first_submit is None:
                self.first_submit = started
            self.last_submit = started
            deadline = started + self.timeout
            if not self.submit(req, deadline):
                exc = NotAccepted(f"no entry accepted the request within {self.timeout:g} s")
                self.outcome["not_accepted"] += 1
                elapsed = time.monotonic() - started
            else:
                try:
                    elapsed = waiter.get(timeout=max(0.0, deadline - time.monotonic())) - started
                    self.outcome["completed"] += 1
                except gevent.Timeout:
                    exc = WorkflowTimeout(f"no completion within {self.timeout:g} s")
                    self.outcome["timed_out"] += 1
                    elapsed = time.monotonic() - started
            self.waiting.pop(req, None)
        except Exception as error:  # a bug here must still count as one of the N, never hang the run
            log.exception("workflow failed")
            exc, elapsed = error, time.monotonic() - started
            self.outcome["error"] += 1
        try:
            assert self.environment is not None, "Locust's init event comes before any user"
            self.environment.events.request.fire(
                request_type="WORKFLOW", name="instantiate", response_time=elapsed * 1000.0, response_length=0,
                exception=exc, context={},
            )
        finally:
            self.account()

    def submit(self, req: str, deadline: float) -> bool:
        """Send the request to every entry; if none accepts, again every 50 ms, until the deadline."""
        body = padded({"req": req}, self.entry_bytes)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._attempt(body, min(POST_TIMEOUT, remaining)):
                return True
            gevent.sleep(min(RETRY_EVERY, max(0.0, deadline - time.monotonic())))

    def _attempt(self, body: bytes, limit: float) -> bool:
        """POST to every entry at once; True as soon as one answers 2xx, False once all refused or timed out.
        The other POSTs still run to their end in the background: the request reaches every entry, but a
        paused entry does not hold the user up (harness/load/bss.py waits for all of them)."""
        accepted = AsyncResult()
        refused = 0

        def post(addr: str) -> None:
            nonlocal refused
            if self._post(addr, body, limit):
                if not accepted.ready():
                    accepted.set(True)
            else:
                refused += 1
                if refused == len(self.entry) and not accepted.ready():
                    accepted.set(False)

        for addr in self.entry:
            gevent.spawn(post, addr)
        return bool(accepted.get())

    def _post(self, addr: str, body: bytes, limit: float) -> bool:
        try:
            resp = self.http.request("POST", f"http://{addr}/request", body=body,
                                     headers={"Content-Type": "application/json"},
                                     timeout=urllib3.Timeout(total=limit), retries=False)
            return 200 <= resp.status < 300
        except (urllib3.exceptions.HTTPError, OSError, gevent.Timeout):
            return False

    def account(self) -> None:
        self.accounted += 1
        if self.accounted == self.total:
            gevent.spawn(self.finish)

    # -- the two loops ----------------------------------------------------------------------------------

    def closed_loop(self) -> None:
        self.go.wait()
        while self.claim():
            self.workflow()
        self.done.wait()

    def open_loop(self) -> None:
        """One scheduler greenlet spawns one greenlet per request at its planned time.

        Chosen over `constant_throughput(rate / users)`: Locust's throughput wait only delays a user's next
        task, so the rate holds only while every user's previous workflow finished within 1/(rate/users)
        seconds, i.e. with users >= rate x latency, unknown in advance and growing under faults; a slow
        system would then lower the offered load (coordinated omission). Here arrival i is due at start + i /
        rate (or a Poisson process), on an absolute schedule (no drift from sleep overshoot), whatever the
        completions: a true open loop. Only the first user schedules; any other waits for the end.
        """
        if self.scheduler_taken:
            self.done.wait()
            return
        self.scheduler_taken = True
        self.go.wait()
        rng = random.Random(self.cfg.get("seed"))
        poisson = self.cfg.get("arrivals", "constant") == "poisson"
        start = time.monotonic()
        due = 0.0
        while self.claim():
            delay = start + due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            gevent.spawn(self.workflow)
            due += rng.expovariate(self.rate) if poisson else 1.0 / self.rate
        self.done.wait()

    # -- the end ------------------------------------------------------------------------------------------

    def finish(self) -> None:
        gevent.sleep(self.linger)  # late duplicate notices still reach the history
        self.done.set()
        self.quit_runner()

    @property
    def finished(self) -> bool:
        return self.accounted >= self.total

    def quit_runner(self) -> None:
        """Stop Locust's runner: the load is over, or its launcher is gone."""
        if self.environment is not None and self.environment.runner is not None:
            self.environment.runner.quit()

    def summary(self) -> Summary:
        span = (self.last_submit - self.first_submit) if self.first_submit is not None and self.last_submit else 0
        return {
            "requests": self.total, "issued": self.issued, "accounted": self.accounted, **self.outcome,
            "first_submit": self.first_submit, "last_submit": self.last_submit,
            "offered_rate": (self.issued - 1) / span if span > 0 else None,
            "completions": sum(self.completions.values()), "duplicates": sum(n - 1 for n in self.completions.values()),
            "events_lost": self.sink.lost, "finished": self.finished, "refused": self.refused,
        }


bss: Bss | None = None


def _watch_parent(parent: int) -> None:
    """The launcher died (SIGKILLed harness): stop, do not run on as an orphan."""
    while True:
        if os.getppid() != parent:
            log.warning("launcher %d is gone: stopping", parent)
            if bss is not None:
                bss.quit_runner()
            return
        gevent.sleep(0.5)


@events.init.add_listener
def _on_init(environment: Environment, **_: object) -> None:
    global bss
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise SystemExit(f"{CONFIG_ENV} is not set: this locustfile is started by harness/load/locust_runner.py")
    # Locust only logs an Exception raised by an init listener and runs on; SystemExit ends the process.
    try:
        made = Bss(json.loads(raw))
        made.server.start()  # bound before any user exists
    except (ValueError, KeyError, TypeError, OSError) as error:
        log.error("cannot start the BSS: %s", error)
        raise SystemExit(EXIT_SETUP) from error
    bss = made
    bss.environment = environment
    if bss.cfg.get("parent"):
        gevent.spawn(_watch_parent, int(bss.cfg["parent"]))


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: object) -> None:
    if bss is None:
        return
    if environment.runner is not None and environment.runner.exceptions:
        environment.process_exit_code = 2
    else:
        environment.process_exit_code = 0 if bss.finished else 3
    if bss.cfg.get("summary"):
        with open(bss.cfg["summary"], "w", encoding="utf-8") as fh:
            json.dump(bss.summary(), fh, indent=1)
    bss.server.stop(timeout=0.5)
    bss.sink.close()


class BssUser(User):
    """One simulated BSS user (closed loop), or the open loop's scheduler."""

    wait_time = constant(0)

    @task
    def instantiate(self) -> None:
        assert bss is not None
        if bss.mode == "open":
            bss.open_loop()
        else:
            bss.closed_loop()
