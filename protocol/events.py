"""The event stream: what every process of a run tells the harness, and the kinds of event there are.

Wire format: one JSON object per line, over one TCP connection per process, to the collector's host:port
(the spec's `collector`). Every event has `t` (CLOCK_MONOTONIC seconds: system-wide on Linux, so comparable
across the processes of one host), `wall` (Unix time), `svc` (the instance id, or "bss", "harness") and
`kind`; the other fields depend on the kind (`KINDS`). A request's id is `req` (a UUID), a task's number
`task` (1-based), byte counts are body bytes. `epoch` (an integer >= 1, only with `mechanism: fenced`,
docs/fencing.md) is the ownership epoch of the request the event acts under: its fencing token. Events are
sent synchronously, before the process goes on, so the collector sees "task 3 of R ended" before the
service can start task 4: that is what lets the harness strike at a chosen point of a workflow. A line that
does not parse is counted, not recorded.
Each connection opens with a hello line, `{"hello": svc, "secret": key}` (`protocol.auth`): the collector
takes events only from a sender that proved its name, and only events of that name.

A process that could not send some events says so with `events_lost` once it can again; the harness's
verdict is then "unknown", never "pass".
"""

from __future__ import annotations

import json
import math
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from protocol import auth
from protocol.spec import address


@dataclass(frozen=True)
class Kind:
    """One kind of event: who records it, its fields beyond t/wall/svc/kind (`?` = optional), what it means."""

    by: str
    fields: str
    means: str


SERVICES = "service"
KINDS: dict[str, Kind] = {
    # life cycle
    "started": Kind(SERVICES, "role, task?, uuid?", "the instance listens and can take work"),
    "stopping": Kind(SERVICES, "refused?", "SIGTERM received: the instance shuts down cleanly (`refused`: control "
                     "requests it answered 403 for want of its key)"),
    "events_lost": Kind(SERVICES, "lost", "this many earlier events could not be sent: the history has a hole"),
    "bad_message": Kind("service, bss", "plane?, path, status?, reason?",
                        "a malformed or oversized message, answered 4xx and never fatal"),
    "error": Kind(SERVICES, "plane, path, error", "a handler failed: answered 500, the instance lives on"),
    "broker_lost": Kind(SERVICES, "plane, error", "transport amqp: the connection of this plane to the broker "
                        "went away; the instance reconnects with back-off"),
    "broker_back": Kind(SERVICES, "plane, down_for", "transport amqp: the plane is connected to the broker again"),
    # a workflow
    "request_received": Kind(SERVICES, "req, owner, bytes, task?, epoch?",
                             "a request (or chain hop) arrived; `owner` is the instance that ranks as its driver "
                             "(fenced: the owner of `epoch` as this instance knows it)"),
    "request_logged": Kind(SERVICES, "req, owner, task?, epoch?",
                           "a non-owner logged the request, to take it over if needed"),
    "request_duplicate": Kind(SERVICES, "req, task?", "the request was already known here: dropped"),
    "task_call": Kind("slm", "req, task, name, worker, attempt, epoch?", "the SLM calls worker m_i"),
    "task_call_failed": Kind("slm", "req, task, worker, error", "the call failed (a dead worker): retried elsewhere"),
    "task_reply": Kind("slm", "req, task, name, worker, bytes_out, bytes_in, epoch?",
                       "the worker's reply arrived (fenced: and the owner may still act on it)"),
    "task_start": Kind("worker, module, monolith", "req, task, name, bytes_in?, epoch?",
                       "the work of task i starts here"),
    "task_end": Kind("worker, module, monolith", "req, task, name, bytes_out?, epoch?",
                     "the work of task i is done here: its effect is applied (fenced: under `epoch`)"),
    "task_repeated": Kind("worker", "req, task, epoch", "fenced: a second call of an epoch whose task this "
                          "replica applied (or is applying): answered with that execution's reply, not applied again"),
    "task_fenced": Kind("worker", "req, task, epoch, seen", "fenced: a call of an epoch below the highest seen "
                        "for the request (`seen`) was refused: no effect applied"),
    "forward_sent": Kind("module", "req, task, to, bytes", "the chain's hop i -> i+1, to one instance of m_{i+1}"),
    "forward_failed": Kind("module", "req, task, to, error", "a hop could not be delivered"),
    "request_completed": Kind(SERVICES, "req, task?, epoch?, already?",
                              "the driver sent the completion notice to the BSS (`already`: fenced, the BSS had "
                              "one from an earlier owner and did not count this one)"),
    # the reliability mechanism
    "state_share_sent": Kind("slm", "req, task, peer, bytes, epoch?", "the owner shared its state after task i"),
    "state_share_received": Kind("slm", "req, task, owner, bytes", "a peer stored the owner's state"),
    "state_share_failed": Kind("slm", "req, task, peer, error", "a share could not be delivered"),
    "state_share_stale": Kind("slm", "req, task, owner", "a share older than what the peer has: ignored"),
    "done_sent": Kind("slm, module", "req, peer, bytes, task?", "peers may forget the request"),
    "done_received": Kind("slm, module", "req, by, bytes, task?", "a peer's 'done' arrived"),
    "done_failed": Kind("slm, module", "req, peer, error, task?", "a 'done' could not be delivered"),
    "hb_sent": Kind("slm, module", "seq, peers, bytes, triggered?, silence?",
                    "a heartbeat to every peer (`triggered`: sent on the harness's /hb-now)"),
    "released": Kind("slm, module", "", "the instance speaks again after /hb-now's silence"),
    "peer_dead": Kind("slm, module", "peer, silent_for", "a peer was silent for longer than t_h"),
    "peer_rejoined": Kind("slm, module", "peer", "a heartbeat from a peer declared dead"),
    "takeover": Kind("slm, module", "req, dead, from_task, last_shared?, task?, epoch?",
                     "a survivor resumes a dead owner's request at task `from_task` (fenced: it won `epoch` "
                     "from a majority)"),
    # the fenced mechanism (targets/fencing.py, docs/fencing.md)
    "vote_asked": Kind("slm, module", "req, epoch, peers, bytes", "a candidate asked every peer to promise it "
                       "`epoch` of the request (one round; repeated while no majority answers)"),
    "vote_granted": Kind("slm, module, witness", "req, epoch, candidate, bytes, task?", "this instance promised "
                         "`epoch` to `candidate` (the witness: of hop `task`): it grants no other candidate that "
                         "epoch and confirms no earlier one"),
    "epoch_check": Kind("slm, module", "req, epoch, outcome, era, bytes", "an owner whose lease lapsed (or a request's "
                        "first step) asked the majority whether `epoch` is still its own: ok, stale or "
                        "undecided (no majority answered: it waits)"),
    "stepped_down": Kind("slm, module", "req, epoch, newer, owner, task?", "the owner learnt of a later epoch "
                         "(`newer`, of `owner` where known) and stopped driving the request"),
    # the BSS (harness.load.bss, or the Locust BSS)
    "submitted": Kind("bss", "req, to, warmup?", "a request went to every entry point"),
    "completed": Kind("bss", "req, by, n, warmup?, error?, epoch?", "a completion notice arrived (n > 1: a "
                      "duplicate; `error`: a python client saw the target attach one to the workflow it completed)"),
    "completion_refused": Kind("bss", "req, by, epoch, reason, warmup?", "fenced: a completion notice not counted: "
                               "`stale` (an epoch below one the BSS saw) or `already` (the request was completed)"),
    "failed": Kind("bss", "req, state?, detail?, warmup?", "a python client (protocol.client) saw the target refuse or "
                   "fail the workflow: certainly not done"),
    "indeterminate": Kind("bss", "req, state?, detail?, warmup?", "a python client could not tell how the workflow "
                          "ended (timed out, stuck, the connection died): neither done nor not done"),
    "client_action": Kind("bss", "action, req?, warmup?", "a python client did something an operator would (a retry, "
                          "a package onboarded): recorded, never hidden in a figure"),
    # the harness
    "deploy": Kind("harness", "design, run, services", "the deployment was planned"),
    "links_shaped": Kind("harness", "backend, places, directions", "tc is installed in every namespace (netem)"),
    "broker_ready": Kind("harness", "address, started_in", "transport amqp: the run's broker accepts AMQP "
                         "connections (started_in: wall seconds from its start)"),
    "ready": Kind("harness", "", "every service answers its health check"),
    "load_start": Kind("harness", "waited, quiet, suspicions_before, warmup, warmup_completed",
                       "settled and warmed up: the measured load starts now"),
    "fault": Kind("harness", "fault, action, target, req?, task?, late_by?, ...",
                  "a fault struck (`action` in FAULT_START) or was undone (FAULT_END)"),
    "fault_missed": Kind("harness", "fault", "the load ended before the fault's moment came"),
    "down": Kind("harness", "", "teardown finished"),
}
def is_event(obj: object) -> bool:
    """Whether a parsed line has what every event has: a finite number `t` (not a boolean), strings `svc` and
    `kind`. The collector stores nothing else, and the history's reader counts anything else as unreadable."""
    if not isinstance(obj, dict):
        return False
    t = obj.get("t")
    return (isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
            and isinstance(obj.get("svc"), str) and isinstance(obj.get("kind"), str))


FAULT_START = ("kill", "pause", "cut", "delay")  # a `fault` event's `action` when it strikes
FAULT_END = ("resume", "heal", "restore", "restart")  # ... and when it is undone (restart: a crashed broker)


class EventSink:
    """Emits events for one service; falls back to stdout when no collector was given."""

    CONNECT_TIMEOUT = 2.0  # s; a live collector answers in milliseconds, even on a busy host
    SLOW = 0.1  # s; a failed dial that took longer than this met no host (not a refusal): back off
    BACKOFF = (1.0, 8.0)  # s; first and largest pause between slow dials (doubling)

    def __init__(self, collector: str | None, svc: str, run: str, secret: str | None = None) -> None:
        """`secret`: this sender's key (`protocol.auth.key`, the spec's `secret`), sent as the first line of every
        connection: the collector drops a connection without the right one."""
        self.svc, self.run = svc, run
        self.collector = collector
        self.hello = auth.hello(svc, secret or "")
        self.sock: socket.socket | None = None
        self.lost = 0  # events that could not be sent
        self.reported = 0  # of those, how many an `events_lost` event has owned up to
        self.retry_at = 0.0  # no dial before this (monotonic s), after a slow failure
        self.backoff = 0.0
        if collector:
            self._connect()

    def _connect(self) -> None:
        """Dial the collector. A refusal fails at once and is retried with the next event; a dial that meets
        no host (the harness's whole namespace gone: its gateway on a swarm) blocks the service's loop for up
        to CONNECT_TIMEOUT, so after one the sink waits (BACKOFF, doubling) before it dials again, and events
        meanwhile count as lost. Without it every heartbeat's event blocked 2 x 5 s, and an orphaned SLM
        outlived its grace by tens of seconds (its watchdog hardly ran)."""
        assert self.collector
        now = time.monotonic()
        if now < self.retry_at:
            return
        try:
            sock = socket.create_connection(address(self.collector), timeout=self.CONNECT_TIMEOUT)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(self.hello)
            except OSError:
                sock.close()
                raise
            self.sock = sock
            self.backoff = 0.0
        except OSError:
            self.sock = None
            if time.monotonic() - now > self.SLOW:
                self.backoff = min(self.BACKOFF[1], self.backoff * 2 or self.BACKOFF[0])
                self.retry_at = time.monotonic() + self.backoff

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one event (returned, so its `t` can be used by the caller) before going on."""
        record = {"t": time.monotonic(), "wall": time.time(), "svc": self.svc, "kind": kind, **fields}
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        if not self.collector:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            return record
        if self._send(line) and self.lost > self.reported:
            # the history has a hole: say so, so the harness's verdict becomes "unknown" instead of "pass"
            gap = {"t": time.monotonic(), "wall": time.time(), "svc": self.svc, "kind": "events_lost",
                   "lost": self.lost - self.reported}
            if self._send((json.dumps(gap, separators=(",", ":")) + "\n").encode()):
                self.reported = self.lost
            else:
                self.lost -= 1  # the report itself is no lost event: it is retried with the next one
        return record

    def _send(self, line: bytes) -> bool:
        """One line to the collector, reconnecting once; counts it as lost when that fails."""
        for _ in range(2):
            if self.sock is None:
                self._connect()
            if self.sock is not None:
                try:
                    self.sock.sendall(line)
                    return True
                except OSError:
                    self.sock.close()
                    self.sock = None
        self.lost += 1
        return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
