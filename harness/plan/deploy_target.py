"""From a target file (harness.plan.target) to a deployment: one service spec per instance, a link per
(instance, peer, plane) it declares, and the client's links to the entries.

The same `Deployment` as the reference designs get (harness.plan.deploy), so the runtimes, the link backends,
the faults, the capture and the record treat a foreign orchestrator exactly as ours: every address an
instance dials is in its spec's `peers`, chosen by `route` (the peer, or a latency proxy in front of it), and
every link carries the target file's `latency` for its plane (paper seconds, both ways).
"""

from __future__ import annotations

from collections.abc import Callable

from harness.plan.config import Experiment
from harness.plan.deploy import Deployment, Link, Route
from harness.plan.target import TargetFile
from protocol.spec import ServiceSpec

CLIENT = "bss"  # the client's name among the hosts and links, as the reference designs' BSS


def plan_target(target: TargetFile, z: Experiment, run: str, host_of: Callable[[str], str], bss: str,
                collector: str | None, route: Route) -> Deployment:
    """Service specs and links of `target`; the entries' `op` addresses are where the http client posts."""
    links: list[Link] = []

    def link(src: str, dst: str, plane: str) -> str:
        delay = target.client_latency if src == CLIENT else target.latency.get(plane, 0.0)
        made = Link(f"{src}>{dst}:{plane}", src, dst, plane, delay, delay,
                    target=f"{host_of(dst)}:{target.instance(dst).ports[plane]}")
        made.address = route(made)
        links.append(made)
        return made.address

    zdata = z.resolved()
    services = []
    for inst in target.instances:
        extra = inst.spec
        services.append(ServiceSpec(
            id=inst.id, role=inst.role, run=run, bind=host_of(inst.id), ports=dict(inst.ports), z=zdata,
            collector=collector if target.instrumented else None, bss=bss,
            peers={peer: {plane: link(inst.id, peer, plane) for plane in planes}
                   for peer, planes in inst.peers.items()},
            task=extra.task if extra else None,
            workers=[[link(inst.id, w, "op") for w in group] for group in extra.workers] if extra else [],
            next=[link(inst.id, m, "op") for m in extra.next] if extra else []))
    entries = {name: {plane: link(CLIENT, name, plane) for plane in target.instance(name).ports}
               for name in target.entry}
    entry = [planes["op"] for planes in entries.values() if "op" in planes]
    return Deployment(z, services, links, entry, 0, {s.id: s.role for s in services}, entries=entries)
