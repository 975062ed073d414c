"""From an experiment z to a deployment: which service instances exist, and every link between them.

The plan is independent of the runtime: a runtime says where a service lives (`host_of`), and the link
layer may put a latency proxy on any link (`route`), in which case the caller is given the proxy's address
instead of the destination's. Each link carries the latency the model assigns to it: l_{i,a}/l_{i,b} for
SLM <-> m_i, l_hb between SLMs and between twins, l_{i,i+1} on the distributed chain (hop 0 is BSS -> m_1).
Links to and from the BSS other than hop 0 have no latency: the model keeps the BSS outside t_c.

With `transport: amqp` the services' messages to each other go by the run's broker (protocol.bus): a spec
names `bus:` addresses instead, and the links are each service's connection to the broker per plane, the
latency on the delivery leg (broker -> consumer), so that every message's end-to-end delay is the one the
model gives it (`bus_legs`, docs/model.md). The BSS's links stay HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.plan.config import Experiment
from protocol.bus import AMQP_PORT, bus_address
from protocol.messages import PLANES
from protocol.spec import ServiceSpec


@dataclass
class Link:
    """One directed link: `src` calls `dst` on `plane`; fwd is the request direction, rev the reply."""

    name: str
    src: str
    dst: str
    plane: str
    delay_fwd: float  # paper seconds (unscaled)
    delay_rev: float
    target: str = ""  # dst host:port
    address: str = ""  # what src dials: target, or the proxy in front of it


@dataclass
class Deployment:
    z: Experiment
    services: list[ServiceSpec]
    links: list[Link]
    entry: list[str]  # where the BSS sends each request (every SLM, both instances of m_1, or the monolith)
    entry_bytes: int = 0  # size of a request body: P_{0,1} for the distributed chain's hop 0, else minimal
    roles: dict[str, str] = field(default_factory=dict)
    # a target file's client: entry id -> plane -> the address it dials (harness.plan.deploy_target); the
    # reference designs' BSS needs only `entry`
    entries: dict[str, dict[str, str]] = field(default_factory=dict)

    def service(self, svc_id: str) -> ServiceSpec:
        return next(s for s in self.services if s.id == svc_id)

    def of_role(self, role: str) -> list[ServiceSpec]:
        return [s for s in self.services if s.role == role]


Route = Callable[[Link], str]


def direct(link: Link) -> str:
    return link.target


def plan(z: Experiment, run: str, host_of: Callable[[str], str], bss: str, collector: str | None,
         route: Route = direct) -> Deployment:
    """Service specs and links for z; `route` decides what address each link's source dials."""
    builder = _Builder(z, run, host_of, bss, collector, route)
    {"monolith": builder.monolith, "centralised": builder.centralised, "distributed": builder.distributed}[z.design]()
    if builder.bus:
        builder.broker_links()
    entry_bytes = int(z.per_task("P")[0] * 1000) if z.design == "distributed" else 0
    return Deployment(z, builder.services, builder.links, builder.entry, entry_bytes,
                      {s.id: s.role for s in builder.services})


def uses_broker(z: Experiment) -> bool:
    """Whether the run has a broker: the bus transport, and services that talk to each other."""
    return z.transport == "amqp" and z.design != "monolith"


BROKER = "broker"  # the broker's name among hosts and links (harness.runtime.broker.BROKER_ID)


def bus_legs(z: Experiment, spec: ServiceSpec) -> dict[str, tuple[float, float]]:
    """Per plane of one service: (publisher -> broker, broker -> consumer) latency of its broker connection.

    Every message's latency sits on its consumer's delivery leg, so each message crosses exactly the
    latency the model gives it: SLM -> m_i l_a,i (m_i's delivery leg), the reply l_b,i (m_i's publish leg,
    the SLM's legs are 0), a heartbeat, share or 'done' l_hb (the receiver's delivery leg), the hop into
    m_{i+1} l_i (its delivery leg; hop 0 from the BSS stays HTTP). Per-task lists map exactly."""
    reliability = {"hb": (0.0, z.l_hb), "state": (0.0, z.l_hb)}
    if spec.role == "worker":
        assert spec.task is not None
        return {"op": (z.per_task("l_b")[spec.task - 1], z.per_task("l_a")[spec.task - 1])}
    if spec.role == "module":
        assert spec.task is not None
        return {"op": (0.0, z.per_task("l")[spec.task - 1] if spec.task > 1 else 0.0), **reliability}
    return {"op": (0.0, 0.0), **reliability}


def slm_ids(z: Experiment) -> list[str]:
    return [f"slm-{chr(ord('a') + j)}" if z.k <= 26 else f"slm-{j + 1}" for j in range(z.k)]


def worker_ids(z: Experiment, i: int) -> list[str]:
    """m_i, or m_ia and m_ib when each worker is duplicated (worker-crash needs a survivor)."""
    replicas = z.worker_replicas or 1
    return [f"m{i}"] if replicas == 1 else [f"m{i}{chr(ord('a') + r)}" for r in range(replicas)]


WITNESS = "witness"  # the fenced distributed design's third voter (targets/witness.py)


def module_id(i: int, twin: str) -> str:
    return f"m{i}{twin}"


class _Builder:
    def __init__(self, z: Experiment, run: str, host_of: Callable[[str], str], bss: str,
                 collector: str | None, route: Route) -> None:
        self.z, self.run, self.host_of, self.bss, self.collector, self.route = z, run, host_of, bss, collector, route
        self.zdata = z.resolved()
        self.services: list[ServiceSpec] = []
        self.links: list[Link] = []
        self.entry: list[str] = []
        self.bus = uses_broker(z)

    def broker_links(self) -> None:
        """Each service's connection to the broker, per plane (see `bus_legs`), named in its spec."""
        broker = f"{self.host_of(BROKER)}:{AMQP_PORT}"
        for spec in self.services:
            connect = {}
            for plane, (up, down) in bus_legs(self.z, spec).items():
                link = Link(f"{spec.id}>{BROKER}:{plane}", spec.id, BROKER, plane, up, down, target=broker)
                link.address = self.route(link)
                self.links.append(link)
                connect[plane] = link.address
            spec.bus = {"connect": connect, "queues": self.z.queues}

    def _spec(self, svc_id: str, role: str, planes: tuple[str, ...], **kw) -> ServiceSpec:
        spec = ServiceSpec(id=svc_id, role=role, run=self.run, bind=self.host_of(svc_id),
                           ports={p: PLANES[p] for p in planes}, z=self.zdata, collector=self.collector,
                           bss=self.bss, **kw)
        self.services.append(spec)
        return spec

    def _link(self, src: str, dst: str, plane: str, fwd: float, rev: float, bus: str | None = None) -> str:
        """The address `src` dials for `dst` on `plane`: a link (HTTP), or `dst` on the bus (`bus` names the
        queue's key when it is not `dst`'s own)."""
        if self.bus and src != "bss":
            return bus_address(bus or dst)
        link = Link(f"{src}>{dst}:{plane}", src, dst, plane, fwd, rev, target=f"{self.host_of(dst)}:{PLANES[plane]}")
        link.address = self.route(link)
        self.links.append(link)
        return link.address

    def monolith(self) -> None:
        self._spec("monolith", "monolith", ("op",))
        self.entry = [f"{self.host_of('monolith')}:{PLANES['op']}"]

    def centralised(self) -> None:
        z = self.z
        ids = slm_ids(z)
        l_a, l_b = z.per_task("l_a"), z.per_task("l_b")
        for i in range(1, z.n + 1):
            for wid in worker_ids(z, i):
                self._spec(wid, "worker", ("op",), task=i)
        for me in ids:
            peers = {
                p: {"hb": self._link(me, p, "hb", z.l_hb, z.l_hb), "state": self._link(me, p, "state", z.l_hb, z.l_hb)}
                for p in ids if p != me
            }
            workers = [[self._link(me, w, "op", l_a[i - 1], l_b[i - 1], bus=f"task.{i}") for w in worker_ids(z, i)]
                       for i in range(1, z.n + 1)]
            self._spec(me, "slm", ("op", "hb", "state"), peers=peers, workers=workers)
        self.entry = [f"{self.host_of(s)}:{PLANES['op']}" for s in ids]

    def distributed(self) -> None:
        """The chain of twins; with `mechanism: fenced` also the witness, every module's third voter, linked to
        each module on the hb and state planes with the twins' latency l_hb (targets/witness.py)."""
        z = self.z
        hops = z.per_task("l")
        fenced = z.mechanism == "fenced"
        modules = [module_id(i, t) for i in range(1, z.n + 1) for t in ("a", "b")]
        if fenced:
            self._spec(WITNESS, "witness", ("op", "hb", "state"), peers={m: {} for m in modules})
        for i in range(1, z.n + 1):
            for me, twin in (("a", "b"), ("b", "a")):
                me_id, twin_id = module_id(i, me), module_id(i, twin)
                peers = {twin_id: {"hb": self._link(me_id, twin_id, "hb", z.l_hb, z.l_hb),
                                   "state": self._link(me_id, twin_id, "state", z.l_hb, z.l_hb)}}
                nxt = [] if i == z.n else [
                    self._link(me_id, module_id(i + 1, t), "op", hops[i], hops[i]) for t in ("a", "b")
                ]
                witness = {"id": WITNESS, "hb": self._link(me_id, WITNESS, "hb", z.l_hb, z.l_hb),
                           "state": self._link(me_id, WITNESS, "state", z.l_hb, z.l_hb)} if fenced else {}
                self._spec(me_id, "module", ("op", "hb", "state"), task=i, peers=peers, next=nxt, witness=witness)
        self.entry = [self._link("bss", module_id(1, t), "op", hops[0], hops[0]) for t in ("a", "b")]
