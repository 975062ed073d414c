"""The spec each service instance is started with (environment MANOBENCH_SPEC, JSON), and the host:port
form of every address in it.

Everything a service calls comes from here, never from a convention, so the harness can put a latency
proxy (or a netem'd link) between any two services: the address a spec names may be the destination or
the proxy in front of it, and the service cannot tell (nor needs to).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

SPEC_ENV = "MANOBENCH_SPEC"


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


@dataclass
class ServiceSpec:
    """The JSON a service receives in MANOBENCH_SPEC."""

    id: str
    role: str
    run: str
    bind: str
    ports: dict[str, int]  # plane -> port: "op" (requests, task calls), "hb" (heartbeats), "state" (sharing)
    z: dict[str, Any]  # the resolved experiment configuration, paper units
    collector: str | None = None  # host:port of the harness's event collector; None = events to stdout
    bss: str | None = None  # host:port where completion notices go
    task: int | None = None  # worker/module: which task (1-based) it performs
    peers: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {"hb": addr, "state": addr}
    workers: list[list[str]] = field(default_factory=list)  # SLM: per task, the op address of each replica
    next: list[str] = field(default_factory=list)  # module: op addresses of both instances of m_{i+1}
    # module, mechanism fenced: the chain's witness, {"id": id, "hb": addr, "state": addr} (targets/witness.py)
    witness: dict[str, str] = field(default_factory=dict)
    # transport amqp (protocol.bus): {"connect": {plane: broker host:port}, "queues": "transient"|"durable"};
    # empty on the HTTP transport
    bus: dict[str, Any] = field(default_factory=dict)
    # this instance's own key (protocol.auth.key of its id under the run's secret): it signs the instance's
    # events (the collector's hello) and completion notices, and the harness's /hb-now and /release to it must
    # carry it. None: started by hand, without a harness: nothing is checked. Never on a command line.
    secret: str | None = None

    def to_json(self) -> str:
        """The spec as the service reads it; without `secret` when there is none (a hand-started service)."""
        fields = self.__dict__ if self.secret is not None else {k: v for k, v in self.__dict__.items() if k != "secret"}
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ServiceSpec:
        return cls(**json.loads(text))

    @classmethod
    def from_env(cls) -> ServiceSpec:
        text = os.environ.get(SPEC_ENV)
        if not text:
            raise SystemExit("targets: MANOBENCH_SPEC (the service's JSON spec) is not set")
        return cls.from_json(text)
