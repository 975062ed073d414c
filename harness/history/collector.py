"""The collector: the TCP JSON-lines sink every service streams its events to, appending each to events.jsonl
as it arrives and handing it to subscribers (fault triggers), plus the harness's own events (`emit`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from harness.history.events import Event, Predicate
from protocol import auth
from protocol.events import is_event


class Collector:
    """TCP JSON-lines sink owned by the harness, plus the harness's own events.

    With a run `secret` (the testbed always gives one) every connection must open with a hello line naming its
    sender and carrying that sender's key (`protocol.auth`); a connection without it is dropped and counted in
    `refused`, and every event it sends must be its own (`svc` equal to the hello's name), else that line is
    refused and counted: a service cannot forge another's events, nor the BSS's `completed`. Events of
    `harness` are never received from outside, only emitted here (`emit`). A line that is valid JSON but not an
    event object (`t` a finite number, `svc` and `kind` strings) is a bad line: counted, never stored, so no
    subscriber and no reader of events.jsonl ever meets it. Checks are a few dict lookups: the collector is on
    every service's hot path (events are sent synchronously)."""

    HELLO_TIMEOUT = 10.0  # s; a sender says who it is at once, a connection that does not is dropped

    def __init__(self, path: Path | None = None, secret: str | None = None) -> None:
        self.events: list[Event] = []
        self.path = path
        self._file: TextIO | None = path.open("a", encoding="utf-8") if path else None
        self._subscribers: list[Callable[[Event], None]] = []
        self._server: asyncio.base_events.Server | None = None
        self.address: str | None = None
        self.secret = secret
        self.bad_lines = 0
        self.refused = 0  # connections without the right hello, and events not their sender's own
        self._open: dict[asyncio.StreamWriter, asyncio.Task[object] | None] = {}  # connections: ended by close()

    async def start(self, host: str = "127.0.0.1") -> str:
        self._server = await asyncio.start_server(self._serve, host, 0, limit=1 << 22)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{port}"
        return self.address

    def _greet(self, hello: Event) -> str | None:
        """The sender a hello line proves (its name), or None: refused."""
        svc = hello.get("hello")
        if not isinstance(svc, str) or svc == auth.HARNESS:
            return None
        if self.secret is not None and not auth.matches(auth.key(self.secret, svc), hello.get("secret")):
            return None
        return svc

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender: str | None = None  # the name this connection's hello proved
        self._open[writer] = asyncio.current_task()
        try:
            line = await asyncio.wait_for(reader.readline(), self.HELLO_TIMEOUT)
            while line:
                if not line.endswith(b"\n"):
                    break  # a service killed mid-write: its last partial line is not an event
                try:
                    event = json.loads(line)
                except (ValueError, RecursionError):
                    event = None
                if isinstance(event, dict) and "hello" in event and "kind" not in event:
                    sender = self._greet(event) if sender is None else None
                    if sender is None:
                        self.refused += 1
                        return
                elif self.secret is not None and sender is None:
                    self.refused += 1  # no hello first: whatever this is, it is not from the run
                    return
                elif not is_event(event):
                    self.bad_lines += 1
                elif event["svc"] == auth.HARNESS or (self.secret is not None and event["svc"] != sender):
                    self.refused += 1  # a forged event: counted, never stored
                else:
                    self.record(event)
                line = await reader.readline()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except (ValueError, asyncio.LimitOverrunError):  # a line beyond the limit: not a sender of events
            self.bad_lines += 1
        finally:
            self._open.pop(writer, None)
            writer.close()

    def record(self, event: Event) -> None:
        self.events.append(event)
        if self._file:
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._file.flush()
        for notify in list(self._subscribers):
            notify(event)

    def emit(self, svc: str, kind: str, **fields: object) -> Event:
        """Record an event of the harness side (BSS, faults, runtime) in the same history."""
        event = {"t": time.monotonic(), "wall": time.time(), "svc": svc, "kind": kind, **fields}
        self.record(event)
        return event

    def subscribe(self, notify: Callable[[Event], None]) -> Callable[[], None]:
        """Call `notify` for every event from now on; returns the unsubscribe function."""
        self._subscribers.append(notify)
        return lambda: self._subscribers.remove(notify) if notify in self._subscribers else None

    async def wait_for(self, predicate: Predicate, timeout: float) -> Event:
        """The first event (already recorded or arriving) that matches, or TimeoutError."""
        for event in self.events:
            if predicate(event):
                return event
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        def notify(event: Event) -> None:
            if not future.done() and predicate(event):
                future.set_result(event)

        unsubscribe = self.subscribe(notify)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            unsubscribe()

    async def close(self) -> None:
        """Stop listening and end every open connection (their handlers then finish, none is left to be
        cancelled at the loop's end); then close events.jsonl."""
        if self._server:
            self._server.close()
            handlers = [task for task in self._open.values() if task is not None]
            for writer in list(self._open):
                writer.close()
            if handlers:
                await asyncio.wait(handlers, timeout=1.0)
            await self._server.wait_closed()
        if self._file:
            self._file.close()
            self._file = None
