"""The client of examples/restpoll's orchestrator (protocol.client.Client): submit a workflow with a REST
call, then poll its state until it is COMPLETED, or the deadline passes (then `info`: nobody can tell), or
the orchestrator says it does not know it (then `fail`: a restarted orchestrator forgot it)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from protocol.client import ClientSetup, Outcome


class RestPollClient:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.api = ""
        self.poll = 0.02

    async def open(self, setup: ClientSetup) -> None:
        (entry,) = setup.entries.values()
        self.api = f"http://{entry['api']}"
        self.poll = float(setup.options.get("poll", self.poll))
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def invoke(self, req: str, deadline: float) -> Outcome:
        assert self.session is not None
        end = time.monotonic() + deadline
        try:
            async with self.session.post(f"{self.api}/workflows", json={"name": req}) as resp:
                if resp.status != 202:
                    return Outcome("fail", state=f"HTTP {resp.status}")
                wid = (await resp.json())["id"]
        except aiohttp.ClientConnectorError:
            return Outcome("fail", state="REFUSED")  # no connection: the request was certainly never sent
        except (aiohttp.ClientError, TimeoutError) as err:
            return Outcome("info", state=f"submit: {type(err).__name__}")  # it may have been accepted
        state = "PROCESSING"
        while time.monotonic() < end:
            try:
                async with self.session.get(f"{self.api}/workflows/{wid}") as resp:
                    if resp.status == 404:
                        return Outcome("fail", state="UNKNOWN", detail={"id": wid})
                    state = (await resp.json())["state"]
            except (aiohttp.ClientError, TimeoutError) as err:
                state = f"poll: {type(err).__name__}"
            if state == "COMPLETED":
                return Outcome("ok", by="api", state=state)
            await asyncio.sleep(self.poll)
        return Outcome("info", state=state, detail={"id": wid})

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
