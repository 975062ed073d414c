"""Orphans end themselves: a service whose harness is gone exits instead of running on.

A local process dies with the harness (PR_SET_PDEATHSIG), but a container cannot: a SIGKILLed harness left
the docker runtime's containers running until the next run cleaned them, and on a swarm the services may run
on other hosts. The one thing every service shares with its harness is the event stream: one TCP connection
to the collector, held open for the whole run. When the harness dies its kernel closes that connection (EOF
here); when its host vanishes, TCP keepalive (set here: 2 s idle, 3 probes 1 s apart) reports it. The
watchdog checks every half second without blocking the service (select, then a peek), tries to dial the
collector again once the connection is gone, and exits the process once the collector has been unreachable
for `grace` seconds ($MANOBENCH_ORPHAN_GRACE, default 5). A collector that never goes away (every run's,
until its teardown has stopped the services) costs nothing. This is the project's own addition, not the
paper's.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import sys
import time

from protocol.events import EventSink
from protocol.spec import address

GRACE_ENV = "MANOBENCH_ORPHAN_GRACE"
DEFAULT_GRACE = 5.0


def grace() -> float:
    try:
        return float(os.environ.get(GRACE_ENV, DEFAULT_GRACE))
    except ValueError:
        return DEFAULT_GRACE


def keepalive(sock: socket.socket) -> None:
    """Make a silently vanished peer (its host gone, no FIN) an error within about 5 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


def standing(sock: socket.socket | None) -> bool:
    """Whether a connection the peer never writes to still stands: readable means EOF or an error."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable or sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def reachable(collector: str) -> bool:
    try:
        socket.create_connection(address(collector), timeout=1).close()
        return True
    except OSError:
        return False


async def watch(sink: EventSink, limit: float, period: float = 0.5) -> None:
    """Exit the process once `sink`'s collector has been gone for `limit` seconds."""
    assert sink.collector
    lost_since: float | None = None
    tuned: socket.socket | None = None
    while True:
        await asyncio.sleep(period)
        sock = sink.sock
        if sock is not None and sock is not tuned:
            keepalive(sock)
            tuned = sock
        if standing(sock):
            lost_since = None
            continue
        if sock is not None:  # gone: the next event dials again
            sock.close()
            sink.sock = None
        if await asyncio.to_thread(reachable, sink.collector):
            lost_since = None
            continue
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > limit:
            print(f"orphan: the harness's collector {sink.collector} has been gone for {limit:g} s: exiting",
                  file=sys.stderr, flush=True)
            os._exit(0)
