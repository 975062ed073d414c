"""The load of a target whose client is a python class (`client: {python: module:Class}` in its target file):
`users` concurrent users, each invoking one workflow at a time through the client until `requests` were
invoked, the history recording what the client reported (protocol.client): `submitted` as each invoke
starts, then `completed` (ok), `failed` (fail) or `indeterminate` (info), under the BSS's name, which is
the client's place in every check and figure.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from pathlib import Path

from harness.errors import TestbedError, UserError
from harness.history import Collector
from harness.plan.deploy import Deployment
from harness.plan.target import PythonClient, TargetFile
from protocol.client import STATUSES, Client, ClientSetup, Outcome

BSS = "bss"


def client_class(target: TargetFile) -> type:
    """The class a target file's `client: {python: module:Class}` names, imported with the file's folder and
    its `python_path` on sys.path; one line (UserError) when it is not there."""
    assert isinstance(target.client, PythonClient)
    module_name, _, class_name = target.client.python.partition(":")
    for folder in [".", *target.python_path]:
        path = str((target.base / folder).resolve())
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"target {target.name}: client {target.client.python}: cannot import {module_name}: "
                        f"{err}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not all(callable(getattr(cls, m, None)) for m in ("open", "invoke", "close")):
        raise UserError(f"target {target.name}: client {target.client.python} is not a class with open, invoke and "
                        "close (protocol.client.Client)")
    return cls


class ClientLoad:
    """Drives a python client against a deployed target and records what it reports."""

    def __init__(self, target: TargetFile, deployment: Deployment, collector: Collector, run: str,
                 workdir: Path) -> None:
        self.target, self.deployment, self.collector = target, deployment, collector
        self.client: Client = client_class(target)()
        self.setup = ClientSetup(run=run, entries=deployment.entries, time_scale=deployment.z.time_scale,
                                 options=dict(target.client_options), workdir=str(workdir), base=str(target.base),
                                 record=self._record)
        workdir.mkdir(parents=True, exist_ok=True)
        self.warming = False

    def _record(self, action: str, **fields: object) -> None:
        extra = {"warmup": True} if self.warming else {}
        self.collector.emit(BSS, "client_action", action=str(action), **fields, **extra)

    async def open(self) -> None:
        try:
            await self.client.open(self.setup)
        except Exception as err:  # the target's client failing to open is the testbed failing
            raise TestbedError(f"client {self.target.client}: open failed: {type(err).__name__}: {err}") from err

    async def close(self) -> None:
        try:
            await self.client.close()
        except Exception:  # close must not raise (protocol.client); a client that does is ignored
            pass

    async def one(self, deadline: float, *, warmup: bool = False) -> str:
        """Invoke one workflow and record how it ended; returns the status."""
        req = str(uuid.uuid4())
        extra = {"warmup": True} if warmup else {}
        self.collector.emit(BSS, "submitted", req=req, to=list(self.deployment.entries), **extra)
        try:
            outcome = await asyncio.wait_for(self.client.invoke(req, deadline), deadline + 5.0)
        except TimeoutError:
            outcome = Outcome("info", state="client did not return by the deadline")
        except Exception as err:  # a client that raised cannot say how the workflow ended
            outcome = Outcome("info", state=f"client raised {type(err).__name__}", detail={"error": str(err)[:300]})
        if not isinstance(outcome, Outcome) or outcome.status not in STATUSES:
            outcome = Outcome("info", state="client returned no Outcome")
        fields = {"state": outcome.state, "detail": outcome.detail} if outcome.status != "ok" else {}
        if outcome.status == "ok":  # an error the target attached to a workflow it completed is kept, named
            error = {"error": str(outcome.detail["error"])[:300]} if outcome.detail.get("error") else {}
            self.collector.emit(BSS, "completed", req=req, by=outcome.by or "?", n=1, **error, **extra)
        else:
            self.collector.emit(BSS, "failed" if outcome.status == "fail" else "indeterminate", req=req,
                                **fields, **extra)
        return outcome.status

    async def drive(self, count: int, users: int, deadline: float, *, warmup: bool = False) -> int:
        """`count` workflows by `users` concurrent users; returns how many completed."""
        left = [count]
        completed = [0]
        self.warming = warmup

        async def user() -> None:
            while left[0] > 0:
                left[0] -= 1
                completed[0] += await self.one(deadline, warmup=warmup) == "ok"

        try:
            await asyncio.gather(*(user() for _ in range(max(1, users))))
        finally:
            self.warming = False
        return completed[0]

    async def warm_up(self, n: int, users: int, timeout: float) -> int:
        """harness.experiment.warmup's warm-up: workflows marked `warmup`, left out of every figure."""
        return await self.drive(n, users, timeout, warmup=True)
