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
                     exited: Callable[[], str | None], log_tail: Callable[[], str]) -> None:
    """Until the service's /health says 200 (never a sleep); fail fast, with its log, if it died."""
    url = f"http://{spec.bind}:{spec.ports['op']}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = exited()
        if why:
            raise TestbedError(f"{spec.id} {why} during start-up:\n{log_tail()}")
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                if resp.status == 200:
                    return
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.05)
    raise TestbedError(f"{spec.id} not ready after {timeout:g} s:\n{log_tail()}")
