"""A target's client: how the harness drives an orchestrator through the orchestrator's own API and learns what
became of each workflow, from outside (Jepsen's client and history).

A target file (docs/targets.md) names its client: `http`, the documented one (the harness's BSS posts
`{"req": ...}` to every entry and waits for `POST /complete`), or `python: module:Class`, a class written
against `Client` below for an API of the target's own (a REST call and a poll of the operation's state, a
message on a bus). The client needs nothing inside the target: no events, no hooks. The harness records
what the client reports, and only that, as the history every black-box figure is derived from:

- `submitted` as `invoke` is called, `completed` when it returns `ok`;
- `failed` when it returns `fail` (the target said it did not do it),
  `indeterminate` when it returns `info` (nobody can tell: timed out, stuck, the connection died);
- `client_action` for each `setup.record(...)` (an operator's retry, a package onboarded): explicit and
  counted, never hidden in a figure.

Jepsen's three outcomes, because a workflow the client could not see end is neither done nor not done, and
a checker that counted it as either would lie.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Status = Literal["ok", "fail", "info"]
STATUSES: tuple[Status, ...] = ("ok", "fail", "info")


@dataclass(frozen=True)
class ClientSetup:
    """What the harness tells a client before any load."""

    run: str  # the run's id
    entries: dict[str, dict[str, str]]  # entry instance id -> plane -> the address to dial (maybe a proxy's)
    time_scale: float  # wall seconds per paper second
    options: dict[str, Any]  # the target file's `client_options`, as written
    workdir: str  # a folder of the run's own for the client's files (a package to upload, its logs)
    base: str  # the target file's folder: relative paths in `options` are relative to it
    # record one client action in the history (`client_action`, with `action` and these fields)
    record: Callable[..., None] = field(default=lambda action, **fields: None)


@dataclass(frozen=True)
class Outcome:
    """What became of one workflow, as the client saw it."""

    status: Status  # ok: it completed; fail: it certainly did not; info: it cannot be known
    by: str | None = None  # the instance that completed it, when the client can tell
    state: str | None = None  # the target's own name for how it ended (COMPLETED, FAILED_TEMP, PROCESSING...)
    detail: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping (JSON values)


class Client(Protocol):
    """A client of one target. The harness calls `open` once, then `invoke` from `users` concurrent tasks
    (one workflow at a time each), then `close`, always, also after an error."""

    async def open(self, setup: ClientSetup) -> None:
        """Connect, onboard what every workflow needs (a package, a VIM): before the load, not measured."""

    async def invoke(self, req: str, deadline: float) -> Outcome:
        """Run workflow `req` (a UUID the harness chose) to its end and say how it ended. `deadline`: wall
        seconds the harness waits; a workflow not ended by then is `info`, with the state last seen."""

    async def close(self) -> None:
        """Release what `open` made; must not raise."""
