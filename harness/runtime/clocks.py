"""Clock offsets between the harness and each node of a multi-host run, measured NTP-style.

Events carry each process's CLOCK_MONOTONIC (`t`), which is only comparable between processes of one host.
Across hosts the harness asks each node's agent for its clock several times; each exchange gives
`offset = t_node - (t_send + t_reply) / 2` with `uncertainty = (t_reply - t_send) / 2` (the node read its
clock somewhere inside the round trip), and the exchange with the shortest round trip is kept, as NTP does.
Measured at the start and the end of a run, so a drift between them shows as well; an event `t` of node N
is on the harness's clock as `t - offset(N)`. On one host every offset is 0 within its uncertainty.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import TypedDict


class OffsetRecord(TypedDict, total=False):
    """An `Offset` as config.yaml's swarm section records it (floats rounded to 7 places)."""

    node: str
    offset: float
    uncertainty: float
    wall_offset: float
    samples: int
    at: float


class AgentReply(TypedDict, total=False):
    """What a node's fault agent answers to an action (harness.runtime.swarm_agent)."""

    t: float  # the node's CLOCK_MONOTONIC when it called its Engine
    took: float  # the Engine's time for it, seconds
    status: int  # the Engine's HTTP status


class AgentAction(TypedDict):
    """One fault an agent made on its node, timed on the harness's clock (config.yaml's swarm.agent_actions)."""

    action: str
    service: str
    node: str
    asked: float
    answered: float
    engine_at: float | None
    engine_took: float | None
    status: int | None


@dataclass(frozen=True)
class Offset:
    node: str
    offset: float  # node clock - harness clock [s]
    uncertainty: float  # half the best round trip [s]
    wall_offset: float  # the same for the wall clocks (time.time) [s]
    samples: int
    at: float = 0.0  # the harness's clock when it was measured

    def as_dict(self) -> OffsetRecord:
        return {"node": self.node, "offset": round(self.offset, 7), "uncertainty": round(self.uncertainty, 7),
                "wall_offset": round(self.wall_offset, 7), "samples": self.samples, "at": round(self.at, 7)}


def best(node: str, exchanges: list[tuple[float, float, float, float]]) -> Offset:
    """The offset from (t_send, t_node, t_reply, wall_node - wall_local_mid) exchanges: the shortest round trip."""
    if not exchanges:
        raise ValueError(f"no clock exchange with {node}")
    t0, tn, t1, wall = min(exchanges, key=lambda e: e[2] - e[0])
    return Offset(node, tn - (t0 + t1) / 2, (t1 - t0) / 2, wall, len(exchanges), (t0 + t1) / 2)


def measure(node: str, host: str, port: int, samples: int = 8, timeout: float = 2.0) -> Offset:
    """`samples` exchanges with the agent at host:port (GET /clock) over one keep-alive connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    exchanges = []
    try:
        for _ in range(samples):
            t0, w0 = time.monotonic(), time.time()
            conn.request("GET", "/clock")
            body = json.loads(conn.getresponse().read())
            t1, w1 = time.monotonic(), time.time()
            exchanges.append((t0, float(body["t"]), t1, float(body["wall"]) - (w0 + w1) / 2))
    finally:
        conn.close()
    return best(node, exchanges)


def on_harness_clock(t: float, start: Offset | OffsetRecord, end: Offset | OffsetRecord | None) -> float:
    """A node's monotonic `t` on the harness's clock: minus the node's offset, interpolated linearly between
    the start and end measurements (a drift between them is spread over the run), the start's alone without
    an end."""
    s = start if isinstance(start, dict) else start.as_dict()
    if end is None:
        return t - float(s["offset"])
    e = end if isinstance(end, dict) else end.as_dict()
    s_at, e_at = float(s.get("at", 0.0)), float(e.get("at", 0.0))
    if e_at <= s_at:
        return t - float(s["offset"])
    share = min(1.0, max(0.0, (t - s_at) / (e_at - s_at)))
    return t - (float(s["offset"]) + share * (float(e["offset"]) - float(s["offset"])))


def agent_action(action: str, service: str, node: str, asked: float, answered: float, reply: AgentReply,
                 start: list[OffsetRecord]) -> AgentAction:
    """One fault an agent made on its node, timed on the harness's clock: `asked` and `answered` (the harness's
    call), and `engine_at` (the node's moment of calling its Engine, `reply["t"]`, minus the node's offset;
    None where the node's clock was not measured or the agent did not say) with `engine_took` (the Engine's
    time for it, on the node)."""
    offsets = {str(o["node"]): o for o in start}
    t_node = reply.get("t")
    engine_at = on_harness_clock(float(t_node), offsets[node], None) if t_node is not None and node in offsets \
        else None
    return {"action": action, "service": service, "node": node, "asked": round(asked, 6),
            "answered": round(answered, 6), "engine_at": None if engine_at is None else round(engine_at, 6),
            "engine_took": reply.get("took"), "status": reply.get("status")}
