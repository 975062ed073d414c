"""The `netem` link backend of the docker runtime: every link shaped by tc inside the containers' namespaces.

Same LinkControl as `harness.links.wiring.ProxyWiring` (`route`, `start`, `stop`, `set_delay`, `cut`, `heal`,
`counters`), but nothing sits between a service and its peer: `route(link)` is the link's real target, and
each direction of each link is delayed by a netem qdisc on the egress of the interface the sender's packets
leave by. One directed `Link` src -> dst (target `ip:port`) is two directions:

| direction | packets | shaped where |
| --- | --- | --- |
| fwd | src ip -> dst ip, TCP dport = port | egress of `eth0` in src's namespace (`nsenter -t PID -n tc ...`) |
| rev | dst ip, TCP sport = port -> src ip | egress of `eth0` in dst's namespace |

A sender on the host (the BSS: the distributed design's hop 0, `bss > m1a:op`) has no namespace of its own
to shape in, and shaping the host's own interfaces is not ours to do. Its direction is shaped instead on the
host end of the *receiver's* veth (egress there is what enters the container; the veth belongs to the run's
container and vanishes with it). So hop 0 is shaped on the dst side both ways: fwd on the host end of m1a's
veth, rev in m1a's namespace; each way gets exactly its own delay, as with the proxy.

Per device the layout is one tree (all handles hex, as tc reads them):

    1:    root htb, `default 1`: anything no filter claims goes to 1:1
    1:1   default class, leaf pfifo (handle fff1:): no delay
    1:2   the cut class, leaf `blackhole` (handle fff2:): every packet classified here is dropped
    1:m   one class per direction (m = 0x10, 0x11, ... per device), leaf `netem delay D` (handle m:),
          D = the link's delay that way * time_scale
    filters on 1:, u32 on src ip, dst ip, TCP and dport (or sport):
      prio 0x8000 + m  -> 1:m   (shaping; always there)
      prio m           -> 1:2   (cut: added by cut(), deleted by heal(); a lower prio is looked at first)

The htb classes have a rate (10 Gbit/s) only because htb needs one; the leaf does the work. `cut` does not
use `action drop` (act_gact): this project's kernel has neither act_gact nor sch_prio nor sch_netem, but it
has htb, u32 and blackhole, so the cut works here and anywhere with the classifier; like a real partition it
drops packets (TCP retransmits with back-off, so after heal a stalled connection resumes at its next
retransmission, up to a few seconds later; the proxy instead holds the bytes and delivers them at heal).

The leaf is a parameter (`netem_leaf` in production, `fifo_leaf` where the kernel has no netem), so the
whole classifier can be tested on a kernel without sch_netem. `u32 match ip dport/sport` assumes IPv4 headers
without options, which is what Linux sends. tc commands are built by pure functions (`setup_commands`,
`cut_command`, ...) and run separately (`NetemWiring._run`), through `tc -batch` per device at start.

`counters()` is empty: there is no proxy to count bytes per link; the wire capture on the run's bridge does.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.errors import ManobenchError
from harness.plan.deploy import Link

if TYPE_CHECKING:
    from harness.runtime.contract import Runtime

ROOT = "1:"
DEFAULT_MINOR = 0x1
CUT_MINOR = 0x2
FIRST_MINOR = 0x10
SHAPE_PRIO = 0x8000  # shaping filter of class 1:m has prio SHAPE_PRIO + m; the cut filter prio m
MAX_MINOR = SHAPE_PRIO - 1
HTB_CLASS = ("htb", "rate", "10gbit", "ceil", "10gbit", "burst", "1mb", "cburst", "1mb", "quantum", "60000")
DEFAULT_LEAF = ("pfifo", "limit", "10000")
DEFAULT_LEAF_HANDLE, CUT_LEAF_HANDLE = "fff1:", "fff2:"  # beyond every direction's handle (m: with m <= 0x7fff)
NETEM_LIMIT = 10000  # packets a netem leaf may hold (its default, 1000, is tight for delayed bulk state shares)
TC_TIMEOUT = 10.0

Leaf = Callable[[float], list[str]]  # delay in seconds of real time -> the leaf qdisc's kind and options


def netem_leaf(seconds: float) -> list[str]:
    """Production leaf: netem delaying every packet of the direction by `seconds` (microsecond resolution)."""
    return ["netem", "delay", f"{max(0, round(seconds * 1e6))}us", "limit", str(NETEM_LIMIT)]


def fifo_leaf(seconds: float) -> list[str]:
    """A leaf without delay, for kernels without sch_netem: the classifier can be checked all the same."""
    return ["pfifo", "limit", "1000"]


LEAVES: dict[str, Leaf] = {"netem": netem_leaf, "pfifo": fifo_leaf}
LEAF_ENV = "MANOBENCH_NETEM_LEAF"


def configured_leaf() -> tuple[str, Leaf]:
    """The leaf kind a run puts under each link's class: netem; or, with MANOBENCH_NETEM_LEAF=pfifo, a plain
    fifo, so the whole tc wiring (classes, filters, cuts) can be exercised in containers on a kernel
    without sch_netem. That mode adds NO delay and says so in the run's recorded `link_backend_why`."""
    kind = "pfifo" if os.environ.get(LEAF_ENV) == "pfifo" else "netem"
    return kind, LEAVES[kind]


def netns_inode(pid: int) -> int | None:
    """Inode of a process's network namespace, None once it is gone (a dead or zombie process has none)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class Place:
    """A device whose egress can be shaped, and how to reach its namespace.

    `prefix` goes before `tc`: `("nsenter", "-t", PID, "-n")` for a container's namespace, `()` for the
    host's. `pid`/`netns` tie the place to a container's life: once that namespace is gone (a crashed
    container) the place is gone too, and commands for it are skipped instead of failing or, worse, reaching
    whatever reused the pid.
    """

    label: str
    dev: str
    prefix: tuple[str, ...] = ()
    pid: int | None = None
    netns: int | None = None

    def alive(self) -> bool:
        return self.pid is None or netns_inode(self.pid) == self.netns


@dataclass(frozen=True)
class Endpoint:
    """A service as the wiring sees it: its address, where what it sends can be shaped (`egress`: eth0 in
    its namespace) and where what it receives can be shaped from outside (`ingress`: the host end of its
    veth). A service on the host (the BSS) has neither."""

    ip: str
    egress: Place | None = None
    ingress: Place | None = None


@dataclass(frozen=True)
class Direction:
    """One way of one link: the packets it matches, where it is shaped, its class and its delay (real s)."""

    link: str
    way: str  # "fwd" | "rev"
    place: Place
    minor: int
    src: str
    dst: str
    sport: int | None
    dport: int | None
    delay: float

    @property
    def classid(self) -> str:
        return f"1:{self.minor:x}"

    @property
    def handle(self) -> str:
        return f"{self.minor:x}:"

    @property
    def shape_prio(self) -> int:
        return SHAPE_PRIO + self.minor

    @property
    def cut_prio(self) -> int:
        return self.minor


# --- planning and command construction: pure --------------------------------------------------------------

def _split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"link target must be ip:port, got {target!r}")
    return host, int(port)


def plan_directions(links: Iterable[Link], endpoints: Mapping[str, Endpoint], time_scale: float) -> list[Direction]:
    """Both directions of every link, each placed on the sender's egress (else the receiver's ingress), with
    classes numbered per device from FIRST_MINOR in link order; delays in real seconds."""
    out: list[Direction] = []
    next_minor: dict[Place, int] = {}
    for link in links:
        dst_ip, port = _split_target(link.target)
        src, dst = endpoints[link.src], endpoints[link.dst]
        if dst.ip != dst_ip:
            raise ValueError(f"link {link.name}: target {link.target} is not {link.dst}'s address {dst.ip}")
        for way, sender, receiver, sport, dport, delay in (
                ("fwd", src, dst, None, port, link.delay_fwd), ("rev", dst, src, port, None, link.delay_rev)):
            place = sender.egress or receiver.ingress
            if place is None:
                raise ValueError(f"link {link.name} ({way}): neither end is in a network namespace of its own")
            minor = next_minor.get(place, FIRST_MINOR)
            if minor > MAX_MINOR:
                raise ValueError(f"too many link directions on {place.label} {place.dev}")
            next_minor[place] = minor + 1
            out.append(Direction(link.name, way, place, minor, sender.ip, receiver.ip, sport, dport,
                                 delay * time_scale))
    return out


def by_place(directions: Iterable[Direction]) -> dict[Place, list[Direction]]:
    out: dict[Place, list[Direction]] = {}
    for d in directions:
        out.setdefault(d.place, []).append(d)
    return out


def match_args(d: Direction) -> list[str]:
    """u32 selectors: this direction's TCP packets and nothing else."""
    args = ["match", "ip", "src", f"{d.src}/32", "match", "ip", "dst", f"{d.dst}/32",
            "match", "ip", "protocol", "6", "0xff"]
    if d.dport is not None:
        args += ["match", "ip", "dport", str(d.dport), "0xffff"]
    if d.sport is not None:
        args += ["match", "ip", "sport", str(d.sport), "0xffff"]
    return args


def root_commands(place: Place) -> list[list[str]]:
    """The tree every shaped device gets: htb root, the undelayed default class and the cut class."""
    dev = place.dev
    return [
        ["qdisc", "add", "dev", dev, "root", "handle", ROOT, "htb", "default", f"{DEFAULT_MINOR:x}"],
        ["class", "add", "dev", dev, "parent", ROOT, "classid", f"1:{DEFAULT_MINOR:x}", *HTB_CLASS],
        ["qdisc", "add", "dev", dev, "parent", f"1:{DEFAULT_MINOR:x}", "handle", DEFAULT_LEAF_HANDLE, *DEFAULT_LEAF],
        ["class", "add", "dev", dev, "parent", ROOT, "classid", f"1:{CUT_MINOR:x}", *HTB_CLASS],
        ["qdisc", "add", "dev", dev, "parent", f"1:{CUT_MINOR:x}", "handle", CUT_LEAF_HANDLE, "blackhole"],
    ]


def direction_commands(d: Direction, leaf: Leaf) -> list[list[str]]:
    """A direction's class, its delaying leaf and the filter that sends its packets there."""
    dev = d.place.dev
    return [
        ["class", "add", "dev", dev, "parent", ROOT, "classid", d.classid, *HTB_CLASS],
        ["qdisc", "add", "dev", dev, "parent", d.classid, "handle", d.handle, *leaf(d.delay)],
        ["filter", "add", "dev", dev, "parent", ROOT, "protocol", "ip", "prio", str(d.shape_prio), "u32",
         *match_args(d), "flowid", d.classid],
    ]


def setup_commands(place: Place, directions: Iterable[Direction], leaf: Leaf) -> list[list[str]]:
    cmds = root_commands(place)
    for d in directions:
        if d.place != place:
            raise ValueError(f"direction {d.link} {d.way} is not on {place.label}")
        cmds += direction_commands(d, leaf)
    return cmds


def delay_command(d: Direction, seconds: float, leaf: Leaf) -> list[str]:
    """Change a direction's delay in place (same leaf kind, so `replace` changes it without a gap)."""
    return ["qdisc", "replace", "dev", d.place.dev, "parent", d.classid, "handle", d.handle, *leaf(seconds)]


def cut_command(d: Direction) -> list[str]:
    return ["filter", "add", "dev", d.place.dev, "parent", ROOT, "protocol", "ip", "prio", str(d.cut_prio), "u32",
            *match_args(d), "flowid", f"1:{CUT_MINOR:x}"]


def heal_command(d: Direction) -> list[str]:
    return ["filter", "del", "dev", d.place.dev, "parent", ROOT, "protocol", "ip", "prio", str(d.cut_prio)]


def teardown_command(place: Place) -> list[str]:
    return ["qdisc", "del", "dev", place.dev, "root"]


def tc_argv(place: Place, args: list[str]) -> list[str]:
    return [*place.prefix, "tc", *args]


def batch_input(cmds: Iterable[list[str]]) -> str:
    """What `tc -batch -` reads: one command a line (no argument here contains white space)."""
    return "".join(" ".join(c) + "\n" for c in cmds)


def nsenter_prefix(pid: int) -> tuple[str, ...]:
    return ("nsenter", "-t", str(pid), "-n")


# --- execution ---------------------------------------------------------------------------------------------

Runner = Callable[[list[str], str | None], "subprocess.CompletedProcess[str]"]


def run_command(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TC_TIMEOUT, check=False)


class NetemError(ManobenchError):
    """A tc command failed where it should not (not a user error: the backend was probed before the run)."""


def _failure(place: Place, what: str, proc: subprocess.CompletedProcess[str]) -> NetemError:
    text = " ".join((proc.stderr or proc.stdout or f"exit code {proc.returncode}").split())
    return NetemError(f"netem: {what} on {place.label} ({place.dev}) failed: {text[-400:]}")


def namespace_locator(runtime: Runtime) -> Callable[[str], Endpoint]:
    """Endpoints from a runtime whose services are up, each in a network namespace of its own (containers):
    eth0 in that namespace, and the host end of its veth; a harness-side name (the BSS) is on the host,
    with only its address."""

    def locate(name: str) -> Endpoint:
        ip = runtime.host_of(name)
        inside = runtime.netns(name)
        if inside is None:
            return Endpoint(ip)
        pid, veth = inside
        ns = netns_inode(pid)
        if ns is None:
            raise NetemError(f"netem: container of {name} (pid {pid}) has no network namespace: is it running?")
        egress = Place(name, "eth0", nsenter_prefix(pid), pid, ns)
        ingress = Place(f"{name} (host end)", veth, (), pid, ns) if veth else None
        return Endpoint(ip, egress, ingress)

    return locate


@dataclass
class NetemWiring:
    """A LinkControl over tc: install at `start` (containers up, before load), remove at `stop`."""

    locate: Callable[[str], Endpoint]
    time_scale: float
    leaf: Leaf = netem_leaf
    runner: Runner = run_command
    links: list[Link] = field(default_factory=list)
    directions: dict[tuple[str, str], Direction] = field(default_factory=dict)
    installed: list[Place] = field(default_factory=list)
    cut_now: set[tuple[str, str]] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)  # commands not run: their namespace was gone
    name = "netem"

    @classmethod
    def for_runtime(cls, runtime: Runtime, time_scale: float, leaf: Leaf = netem_leaf) -> NetemWiring:
        return cls(namespace_locator(runtime), time_scale, leaf)

    def route(self, link: Link) -> str:
        """Called by the planner for each link: the caller dials the real target; tc shapes it on the way."""
        self.links.append(link)
        return link.target

    def plan(self) -> list[Direction]:
        names = {n for link in self.links for n in (link.src, link.dst)}
        endpoints = {name: self.locate(name) for name in sorted(names)}
        return plan_directions(self.links, endpoints, self.time_scale)

    def before_up(self, runtime: Runtime) -> None:
        """Nothing yet: tc needs the services' namespaces."""

    def after_up(self) -> dict[str, object]:
        """tc into every service's namespace, now that they exist and before any load."""
        self.start()
        return {"backend": "netem", "places": len(self.installed), "directions": len(self.directions)}

    def pids(self) -> dict[str, int]:
        return {}  # no process of its own

    def start(self) -> None:
        """Install every link's classes and filters; needs the services' namespaces (call after `up`)."""
        planned = self.plan()
        self.directions = {(d.link, d.way): d for d in planned}
        for place, group in by_place(planned).items():
            self.installed.append(place)  # first: stop() removes a half-built tree too
            proc = self.runner(tc_argv(place, ["-batch", "-"]), batch_input(setup_commands(place, group, self.leaf)))
            if proc.returncode != 0:
                raise _failure(place, "installing the link classes", proc)

    def stop(self) -> None:
        """Remove every tree this wiring installed that still exists (a container's dies with its namespace)."""
        places, self.installed = self.installed, []
        for place in reversed(places):
            if place.alive():
                self.runner(tc_argv(place, teardown_command(place)), None)  # best effort: it may be gone already
        self.cut_now.clear()

    def _direction(self, link: Link, way: str) -> Direction:
        try:
            return self.directions[(link.name, way)]
        except KeyError:
            raise KeyError(f"netem: link {link.name} is not shaped by this wiring (was start() called?)") from None

    def _run(self, place: Place, args: list[str], what: str) -> bool:
        if not place.alive():
            self.skipped.append(f"{what} on {place.label}: its network namespace is gone")
            return False
        proc = self.runner(tc_argv(place, args), None)
        if proc.returncode != 0:
            raise _failure(place, what, proc)
        return True

    # --- LinkControl ---------------------------------------------------------------------------------------
    def set_delay(self, link: Link, fwd: float, rev: float) -> None:
        """New delays (paper seconds) for both ways of a link."""
        for way, seconds in (("fwd", fwd), ("rev", rev)):
            d = self._direction(link, way)
            self._run(d.place, delay_command(d, seconds * self.time_scale, self.leaf), f"delay of {link.name} {way}")

    def cut(self, link: Link) -> None:
        """Drop every packet of the link, both ways, until heal (new connections and established ones)."""
        for way in ("fwd", "rev"):
            d = self._direction(link, way)
            if (link.name, way) not in self.cut_now:
                self._run(d.place, cut_command(d), f"cut of {link.name} {way}")
                self.cut_now.add((link.name, way))

    def heal(self, link: Link) -> None:
        for way in ("fwd", "rev"):
            d = self._direction(link, way)
            if (link.name, way) in self.cut_now:
                self.cut_now.discard((link.name, way))
                self._run(d.place, heal_command(d), f"heal of {link.name} {way}")

    def counters(self) -> dict[str, dict[str, object]]:
        """No per-link byte counts with netem (no proxy in between): links.csv takes the wire capture's."""
        return {}


# --- probing the classifier (without netem it cannot run a link, but its structure can be checked) ---------

@functools.cache
def probe_classifier(leaf_kind: str = "netem") -> tuple[bool, str]:
    """Build the whole per-device tree (htb, blackhole, u32, one `leaf_kind` leaf) on `lo` of a throwaway
    namespace: (works, why). `netem` checks what a run needs; `pfifo` the classifier alone. Cached."""
    if os.geteuid() != 0:
        return False, "tc in network namespaces needs root"
    ip, tc, nsenter = shutil.which("ip"), shutil.which("tc"), shutil.which("nsenter")
    missing = [name for name, path in (("ip", ip), ("tc", tc), ("nsenter", nsenter)) if path is None]
    if missing or ip is None:
        return False, f"{' and '.join(missing)} not found on PATH"
    leaf = LEAVES.get(leaf_kind, fifo_leaf)
    ns = f"mb-probe-{secrets.token_hex(4)}"
    try:
        made = run_command([ip, "netns", "add", ns])
        if made.returncode != 0:
            return False, f"cannot create a network namespace: {' '.join(made.stderr.split())}"
        run_command([ip, "-n", ns, "link", "set", "lo", "up"])
        place = Place("probe", "lo", (ip, "netns", "exec", ns))
        d = Direction("probe", "fwd", place, FIRST_MINOR, "127.0.0.1", "127.0.0.1", None, 9, 0.001)
        cmds = [*setup_commands(place, [d], leaf), cut_command(d), heal_command(d)]
        proc = run_command(tc_argv(place, ["-batch", "-"]), batch_input(cmds))
        if proc.returncode != 0:
            return False, f"tc htb/u32/blackhole/{leaf_kind} failed: {' '.join((proc.stderr or '').split())[-300:]}"
        return True, f"tc htb + u32 + blackhole + {leaf_kind} work"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"classifier probe failed: {exc}"
    finally:
        try:
            run_command([ip, "netns", "del", ns])
        except (OSError, subprocess.TimeoutExpired):
            pass
