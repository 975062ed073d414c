"""The messages: HTTP/1.1 + JSON on three planes, each on its own port, bodies padded to the paper's sizes.

Why three planes: bytes seen on the wire are attributed to B_op (op) or B_rel (hb, state) by port alone, by
the latency proxy and by the packet capture alike. Why padding: the model counts message sizes (P_a, P_b,
P, s_z, h_s, p_c, in kB = 1000 bytes); every body is padded with a `pad` field to exactly that size, so the
bodies the services count are the paper's sizes and the wire adds only HTTP's request line and headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

KB = 1000  # the paper's kB, in bytes

PLANES = {"op": 8000, "hb": 8001, "state": 8002}  # plane -> the port every service listens on for it


@dataclass(frozen=True)
class Route:
    """One message a role accepts: on which plane, at which path, with which required JSON fields."""

    plane: str
    method: str
    path: str
    fields: tuple[str, ...]
    served_by: tuple[str, ...]  # roles (and "bss") that answer it
    what: str


ROUTES = (
    Route("op", "GET", "/health", (), ("slm", "worker", "module", "monolith", "witness"),
          "200 once the instance can take work: the harness waits for it before any load"),
    Route("op", "POST", "/request", ("req",), ("slm", "module", "monolith"),
          "a workflow request (the BSS sends it to every entry point: every SLM, both instances of m_1); "
          "a module also gets the chain's hop i -> i+1 here, padded to P_i"),
    Route("op", "POST", "/task", ("req", "task"), ("worker",),
          "SLM -> m_i: do task i (padded to P_a,i); the reply is padded to P_b,i"),
    Route("op", "POST", "/complete", ("req", "by"), ("bss",),
          "the completion notice, delivered until acknowledged; a second notice for a request is a duplicate"),
    Route("hb", "POST", "/hb", ("id", "uuid"), ("slm", "module", "witness"),
          "a heartbeat (padded to h_s), every 1/h_r to every peer (fenced distributed: and to the witness, "
          "whose answer names its incarnation, `uuid`); silence for t_h means dead"),
    Route("hb", "POST", "/hb-now", (), ("slm", "module"),
          "harness hook (optional fields req, task, silence): send one heartbeat to every peer, at once or "
          "when task `task` of `req` ends here, answer once each peer acknowledged it, and with silence fall "
          "silent: the heartbeat phase of the model's worst case (faults/aim.py, targets/membership.py)"),
    Route("hb", "POST", "/release", (), ("slm", "module"),
          "harness hook: speak again after /hb-now's silence (when a pause or link fault, not a crash, followed)"),
    Route("state", "POST", "/state", ("req", "owner", "last_task"), ("slm",),
          "the owner's state after a task (padded to s_z), every s_p tasks from s_o"),
    Route("state", "POST", "/done", ("req", "by"), ("slm", "module"),
          "the request is finished: peers drop its state (padded to p_c)"),
    Route("state", "POST", "/vote", ("req", "epoch", "candidate", "static"), ("slm", "module", "witness"),
          "fenced: promise `epoch` of the request to `candidate`? (padded to h_s) answered {granted, epoch, owner}; "
          "a module's ask also names its hop (`task`) and the witness incarnation it knew at the request's receipt "
          "(`witness`), without which the witness answers nothing"),
    Route("state", "POST", "/confirm", ("req", "epoch", "owner", "static"), ("slm", "module", "witness"),
          "fenced: is `epoch` still `owner`'s? (padded to h_s) answered {ok, epoch, owner}; counts as hearing from it"),
)


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with a `pad` field so the encoded body is `size` bytes (or minimal)."""
    raw = json.dumps({**body, "pad": ""}, separators=(",", ":")).encode()
    fill = max(0, size - len(raw))
    return raw if not fill else json.dumps({**body, "pad": "x" * fill}, separators=(",", ":")).encode()


def fenced_refusal(highest: int, epoch: int, completed: bool) -> str | None:
    """Why a BSS (harness/load/bss.py, the Locust one alike) refuses a fenced completion notice of `epoch`
    (None: it counts): `stale` below the highest epoch it saw for the request, `already` when the request was
    completed (by an owner that then died before its peers heard 'done': the later owner's notice is the same
    completion, not a second service)."""
    if epoch < highest:
        return "stale"
    return "already" if completed else None
