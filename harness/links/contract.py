"""The link backend contract: what carries each link's latency (the userspace proxy, or tc netem inside the
services' namespaces), as `Testbed`, the faults and the measurement use it."""

from __future__ import annotations

from typing import Protocol

from harness.plan.deploy import Link
from harness.runtime.contract import Runtime


class LinkBackend(Protocol):
    name: str  # "proxy" or "netem", as recorded in config.yaml

    def route(self, link: Link) -> str:
        """Called by the planner for each link: the address the link's source dials."""

    def before_up(self, runtime: Runtime) -> None:
        """Once the deployment is planned, before any service starts (the proxies listen before they are dialled)."""

    def after_up(self) -> dict[str, object]:
        """Once every service is up, before any load (tc needs their namespaces); what it did, for the history."""

    def stop(self) -> None:
        """Undo everything it installed or started; safe to call twice."""

    def counters(self) -> dict[str, dict[str, object]]:
        """Per link name, the bytes it forwarded each way, where it counts them (a proxy does, tc does not)."""

    def pids(self) -> dict[str, int]:
        """Processes of its own whose CPU the run samples beside the services' (the proxy daemon)."""

    def set_delay(self, link: Link, fwd: float, rev: float) -> None:
        """The link's latency each way from now on (paper seconds)."""

    def cut(self, link: Link) -> None:
        """Drop everything on the link, both ways, new and established connections alike."""

    def heal(self, link: Link) -> None:
        """Undo `cut`."""
