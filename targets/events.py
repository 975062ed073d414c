"""Structured event history: one JSON line per event, streamed to the harness's collector.

Events are sent synchronously, before the service goes on, so the collector sees "task 3 of R ended"
before the service can start task 4: that is what lets the harness kill a process at a chosen point of a
workflow. Each event carries a monotonic timestamp (comparable across processes on one host: Linux's
CLOCK_MONOTONIC is system-wide) and a wall-clock one.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

from targets.spec import address


class EventSink:
    """Emits events for one service; falls back to stdout when no collector was given."""

    def __init__(self, collector: str | None, svc: str, run: str) -> None:
        self.svc, self.run = svc, run
        self.collector = collector
        self.sock: socket.socket | None = None
        self.lost = 0  # events that could not be sent
        self.reported = 0  # of those, how many an `events_lost` event has owned up to
        if collector:
            self._connect()

    def _connect(self) -> None:
        assert self.collector
        try:
            self.sock = socket.create_connection(address(self.collector), timeout=5)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self.sock = None

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
