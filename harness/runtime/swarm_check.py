"""`harness swarm check`: is this swarm ready for `--runtime swarm`? Nodes, labels, the image on every node,
and every node's clock offset from the harness.

It deploys what a run deploys and nothing more: the run's overlay, the gateway and the fault agent as a
global service. The agent's task on a node that lacks the image is rejected by that node's Engine ("No such
image"), which is the only image check that needs no registry and no second Engine endpoint; on every other
node the agent answers the NTP-style clock exchange. Everything is removed again before it returns, and a
check that was killed is cleaned up like a run (`harness clean`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from harness.errors import UserError
from harness.runtime import engine
from harness.runtime.clocks import OffsetRecord
from harness.runtime.swarm import SwarmRuntime
from harness.runtime.swarm_nodes import nodes, require_manager


class NodeReport(TypedDict, total=False):
    """One node as `harness swarm check` reports it."""

    hostname: str
    id: str  # the node id's first 12 characters
    addr: str
    role: str
    labels: dict[str, str]
    agent: str  # its agent task's state (and error)
    image: str  # "present" | "missing" | "unknown"
    clock: OffsetRecord | None  # None: its agent did not answer /clock


class CheckReport(TypedDict, total=False):
    """What `harness swarm check` found: the nodes, the image, how long it took."""

    nodes: list[NodeReport]
    image: str | None
    took_s: float


def _agent_states(rt: SwarmRuntime) -> dict[str, dict[str, str]]:
    """node id -> the state and error of the agent's newest task on it."""
    out: dict[str, dict[str, str]] = {}
    sid = rt.service_ids.get("agent")
    if not sid:
        return out
    for task in sorted(engine.client().api.tasks(filters={"service": sid}), key=lambda t: t.get("CreatedAt", "")):
        status = task.get("Status", {})
        out[task.get("NodeID", "")] = {"state": status.get("State", "?"), "error": status.get("Err", "")}
    return out


async def check(run: str, timeout: float = 30.0) -> tuple[CheckReport, list[str]]:
    """(report, problems): problems is empty when a run can start here."""
    await asyncio.to_thread(require_manager, "swarm check")
    found = await asyncio.to_thread(nodes)
    report: CheckReport = {"nodes": [{"hostname": n.hostname, "id": n.id[:12], "addr": n.addr, "role": n.role,
                                         "labels": n.labels} for n in found]}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="manobench-swarm-check-") as tmp:
        rt = SwarmRuntime(run, Path(tmp))
        t0 = time.monotonic()
        try:
            await rt.prepare()
            report["image"] = rt.image
            try:
                await rt._await_agents(timeout)
            except UserError as err:  # the states below say which node and why
                problems.append(str(err))
            states = await asyncio.to_thread(_agent_states, rt)
            offsets = {o["node"]: o for o in await asyncio.to_thread(rt.measure_clocks)}
            for entry, node in zip(report["nodes"], found, strict=True):
                st = states.get(node.id, {"state": "no task", "error": ""})
                entry["agent"] = st["state"] + (f" ({st['error']})" if st["error"] else "")
                entry["image"] = "present" if node.id in rt.agents else ("missing" if "image" in st["error"].lower()
                                                                         else "unknown")
                entry["clock"] = offsets.get(node.hostname)
                if entry["image"] == "missing":
                    problems.append(f"image {rt.image} missing on node {node.hostname}")
                elif entry["clock"] is None:
                    problems.append(f"no clock offset from node {node.hostname}: agent {entry['agent']}")
        finally:
            await rt.down()
        report["took_s"] = round(time.monotonic() - t0, 2)
    return report, list(dict.fromkeys(problems))
