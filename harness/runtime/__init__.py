"""Runtimes: how a deployment's services are brought up, addressed, broken and torn down.

Every runtime labels what it creates with the run id (environment MANOBENCH_RUN for processes, labels for
containers) so `harness clean` can find what a crashed run left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from harness.errors import TestbedError
from protocol.spec import ServiceSpec


async def wait_ready(session: aiohttp.ClientSession, spec: ServiceSpec, timeout: float,
                     exited: Callable[[], str | None], log_tail: Callable[[], str],
                     health: tuple[str, str] | None = ("op", "/health")) -> None:
    """Until the service says it is ready (never a sleep): its `health` (plane, path) answers 200, or, with
    no health route (a target file may have none), every port of it accepts a TCP connection; an instance
    without that plane counts as ready once its ports do. Fails fast, with its log, if it died."""
    url = f"http://{spec.bind}:{spec.ports[health[0]]}{health[1]}" if health and health[0] in spec.ports else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = exited()
        if why:
            raise TestbedError(f"{spec.id} {why} during start-up:\n{log_tail()}")
        if await (_http_ok(session, url) if url else _ports_open(spec)):
            return
        await asyncio.sleep(0.05)
    raise TestbedError(f"{spec.id} not ready after {timeout:g} s:\n{log_tail()}")


async def _http_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def _ports_open(spec: ServiceSpec) -> bool:
    for port in spec.ports.values():
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(spec.bind, port), 1.0)
        except (TimeoutError, OSError):
            return False
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return True
