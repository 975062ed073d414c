"""The docker runtime's `netem` link backend: tc commands as data, the classifier in real namespaces, cut/heal.

This machine's kernel has no sch_netem (nor act_gact, nor sch_prio), so the real-namespace tests install the
production tree (htb, u32, blackhole) with a pfifo leaf in place of netem; the leaf's `limit` is made to carry
the delay (`marked_leaf`) so that where each direction's delay landed can be read back with `tc qdisc show`.
The one test that needs netem itself (a measured round trip) runs only where `probe_netem()` says it works.

Namespaces, veths and sleepers are named `mbt-<random>` and removed in the fixture's finally, whatever happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import secrets
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.experiment import testbed as testbed_mod
from harness.experiment.testbed import Testbed
from harness.links.netem import NetemProbe, probe_netem
from harness.links.netem_wiring import (
    CUT_MINOR,
    FIRST_MINOR,
    SHAPE_PRIO,
    Endpoint,
    NetemWiring,
    Place,
    batch_input,
    by_place,
    cut_command,
    heal_command,
    match_args,
    netem_leaf,
    netns_inode,
    nsenter_prefix,
    plan_directions,
    probe_classifier,
    run_command,
    setup_commands,
    tc_argv,
)
from harness.links.wiring import ProxyWiring, select_backend
from harness.plan.deploy import Link, plan
from tests.helpers import experiment

PORT, OTHER = 18000, 18001  # the link's port, and a port no link covers
A_IP, B_IP = "192.0.2.1", "192.0.2.2"  # inside the test's own namespaces only

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and tc need root")


def marked_leaf(seconds: float) -> list[str]:
    """A pfifo leaf whose limit carries the delay in ms (1000 + ms): no netem needed to see where it went."""
    return ["pfifo", "limit", str(1000 + round(seconds * 1000))]


# --- pure: commands as data --------------------------------------------------------------------------------

GATEWAY = "10.9.9.1"


def _fake_docker(names: list[str]) -> dict[str, Endpoint]:
    """Endpoints as namespace_locator would make them, with made-up pids (nothing is run)."""
    out = {"bss": Endpoint(GATEWAY)}
    for i, name in enumerate(names):
        pid = 1000 + i
        out[name] = Endpoint(f"10.9.9.{i + 2}", Place(name, "eth0", nsenter_prefix(pid), pid, 1),
                             Place(f"{name} (host end)", f"veth{name}", (), pid, 1))
    return out


def _planned(design: str, **values: object) -> tuple[list[Link], dict[str, Endpoint], NetemWiring]:
    z = experiment(design=design, n=2, runtime="docker", time_scale=0.5, **values)
    names = {"distributed": ["m1a", "m1b", "m2a", "m2b"], "centralised": ["m1", "m2", "slm-a", "slm-b"]}[design]
    endpoints = _fake_docker(names)
    wiring = NetemWiring(lambda name: endpoints[name], z.time_scale)
    deployment = plan(z, "r", lambda s: endpoints[s].ip if s in endpoints else GATEWAY, f"{GATEWAY}:8100", None,
                      wiring.route)
    return deployment.links, endpoints, wiring


def test_route_is_the_real_target_and_counters_are_empty() -> None:
    links, _endpoints, wiring = _planned("distributed", l=[0.03, 0.07], l_hb=0.02)
    assert links and all(link.address == link.target for link in links)
    assert wiring.links == links and wiring.counters() == {} and wiring.pids() == {}


def test_directions_of_the_distributed_design() -> None:
    links, eps, wiring = _planned("distributed", l=[0.03, 0.07], l_hb=0.02)
    dirs = {(d.link, d.way): d for d in wiring.plan()}
    assert len(dirs) == 2 * len(links)
    hop = dirs[("m1a>m2b:op", "fwd")]  # in m1a's namespace, towards m2b:8000, l_{1,2} * time_scale
    assert hop.place == eps["m1a"].egress
    assert (hop.src, hop.dst, hop.sport, hop.dport) == (eps["m1a"].ip, eps["m2b"].ip, None, 8000)
    assert hop.delay == pytest.approx(0.07 * 0.5)
    back = dirs[("m1a>m2b:op", "rev")]  # in m2b's namespace, from port 8000 back to m1a
    assert back.place == eps["m2b"].egress
    assert (back.src, back.dst, back.sport, back.dport) == (eps["m2b"].ip, eps["m1a"].ip, 8000, None)
    hb = dirs[("m2b>m2a:hb", "fwd")]
    assert hb.dport == 8001 and hb.delay == pytest.approx(0.02 * 0.5)
    # hop 0 starts on the host: fwd is shaped on the host end of m1a's veth (in the host's namespace), rev in m1a
    entry_fwd, entry_rev = dirs[("bss>m1a:op", "fwd")], dirs[("bss>m1a:op", "rev")]
    assert entry_fwd.place == eps["m1a"].ingress and entry_fwd.place.prefix == ()
    assert (entry_fwd.src, entry_fwd.dst, entry_fwd.dport) == (GATEWAY, eps["m1a"].ip, 8000)
    assert entry_fwd.delay == pytest.approx(0.03 * 0.5)
    assert entry_rev.place == eps["m1a"].egress and (entry_rev.dst, entry_rev.sport) == (GATEWAY, 8000)
    # classes are numbered per device from 0x10, without gaps or repeats
    for place, group in by_place(dirs.values()).items():
        assert [d.minor for d in group] == list(range(FIRST_MINOR, FIRST_MINOR + len(group))), place.label


def test_commands_of_one_device() -> None:
    _links, eps, wiring = _planned("centralised", l_a=[0.03, 0.07], l_b=[0.01, 0.09], l_hb=0.02)
    planned = wiring.plan()
    slm = eps["slm-a"].egress
    assert slm is not None
    group = by_place(planned)[slm]
    cmds = setup_commands(slm, group, netem_leaf)
    assert cmds[0] == ["qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"]
    assert ["qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "fff2:", "blackhole"] in cmds
    to_m2 = next(d for d in group if d.link == "slm-a>m2:op" and d.way == "fwd")
    i = cmds.index(["class", "add", "dev", "eth0", "parent", "1:", "classid", to_m2.classid, "htb", "rate", "10gbit",
                    "ceil", "10gbit", "burst", "1mb", "cburst", "1mb", "quantum", "60000"])
    assert cmds[i + 1] == ["qdisc", "add", "dev", "eth0", "parent", to_m2.classid, "handle", to_m2.handle,
                           "netem", "delay", "35000us", "limit", "10000"]  # l_a[2] = 0.07 paper s at 0.5
    assert cmds[i + 2] == ["filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio",
                           str(SHAPE_PRIO + to_m2.minor), "u32", "match", "ip", "src", f"{eps['slm-a'].ip}/32",
                           "match", "ip", "dst", f"{eps['m2'].ip}/32", "match", "ip", "protocol", "6", "0xff",
                           "match", "ip", "dport", "8000", "0xffff", "flowid", to_m2.classid]
    # the reply of m2 to slm-a is shaped in m2 with l_b; slm-b > slm-a:hb's reply here in slm-a with l_hb
    reply = next(d for d in planned if d.link == "slm-a>m2:op" and d.way == "rev")
    assert reply.place == eps["m2"].egress and netem_leaf(reply.delay)[2] == "45000us"
    hb_reply = next(d for d in group if d.link == "slm-b>slm-a:hb" and d.way == "rev")
    assert (hb_reply.sport, hb_reply.dst, netem_leaf(hb_reply.delay)[2]) == (8001, eps["slm-b"].ip, "10000us")
    assert len({c[c.index("handle") + 1] for c in cmds if c[0] == "qdisc"}) == sum(c[0] == "qdisc" for c in cmds)
    # cut: the same match sent to the blackhole class at a prio looked at before every shaping filter
    cut = cut_command(to_m2)
    assert cut[cut.index("prio") + 1] == str(to_m2.minor) and to_m2.minor < SHAPE_PRIO
    assert cut[-2:] == ["flowid", f"1:{CUT_MINOR:x}"] and cut[cut.index("u32") + 1:-2] == match_args(to_m2)
    assert cmds[i + 2][cmds[i + 2].index("u32") + 1:-2] == match_args(to_m2)
    assert heal_command(to_m2) == ["filter", "del", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio",
                                   str(to_m2.minor)]
    assert tc_argv(slm, ["-batch", "-"])[:5] == ["nsenter", "-t", str(slm.pid), "-n", "tc"]
    assert batch_input(cmds).count("\n") == len(cmds)


def test_a_link_with_no_namespace_at_either_end_is_refused() -> None:
    eps = {"x": Endpoint("10.0.0.2"), "y": Endpoint("10.0.0.3")}
    with pytest.raises(ValueError, match="neither end"):
        plan_directions([Link("x>y:op", "x", "y", "op", 0.1, 0.1, target="10.0.0.3:8000")], eps, 1.0)


# --- select_backend, Testbed ---------------------------------------------------------------------------------

def test_docker_netem_is_refused_in_one_line_without_netem() -> None:
    if probe_netem().available:
        pytest.skip("this kernel has netem")
    with pytest.raises(UserError) as err:  # the CLI prints a UserError as one line, exit code 2
        select_backend("netem", "docker")
    text = str(err.value)
    assert "\n" not in text and "netem" in text and "proxy" in text and probe_netem().reason in text


def test_docker_auto_picks_the_proxy_and_says_why() -> None:
    if probe_netem().available:
        pytest.skip("this kernel has netem")
    backend, why = select_backend("auto", "docker")
    assert backend == "proxy" and "netem probe" in why and probe_netem().reason in why
    assert select_backend("proxy", "docker")[0] == "proxy"
    assert select_backend("auto", "local")[0] == "proxy"  # the local runtime: unchanged
    with pytest.raises(UserError):
        select_backend("tc", "docker")


def test_docker_backend_where_the_kernel_has_netem(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.links.wiring as wiring

    monkeypatch.setattr(wiring, "probe_netem", lambda: NetemProbe(True, "tc netem works (probed)"))
    monkeypatch.setattr(wiring, "probe_classifier", lambda kind: (True, "tc htb + u32 + blackhole + netem work"))
    for preference in ("auto", "netem"):
        backend, why = select_backend(preference, "docker")
        assert backend == "netem" and "nsenter" in why and "netem works" in why
    assert select_backend("proxy", "docker")[0] == "proxy"
    with pytest.raises(UserError, match="netem needs a network namespace"):
        select_backend("netem", "local")
    monkeypatch.setattr(wiring, "probe_classifier", lambda kind: (False, "tc: u32 unknown"))
    assert select_backend("auto", "docker")[0] == "proxy" and "u32 unknown" in select_backend("auto", "docker")[1]
    with pytest.raises(UserError, match="u32 unknown"):
        select_backend("netem", "docker")


def test_the_classifier_probe_works_here_with_a_fifo_leaf() -> None:
    works, why = probe_classifier("pfifo")
    if os.geteuid() != 0:
        assert not works
        return
    assert works, why
    assert probe_classifier("netem")[0] == probe_netem().available


def test_testbed_picks_the_wiring(tmp_path: Path) -> None:
    local, docker = experiment(), experiment(runtime="docker")
    assert isinstance(Testbed(local, tmp_path / "p", links_backend="proxy").wiring, ProxyWiring)
    assert isinstance(Testbed(local, tmp_path / "q", links_backend="proxy").wiring, ProxyWiring)
    assert Testbed(local, tmp_path / "d").wiring is None
    tb = Testbed(docker, tmp_path / "n", links_backend="netem")
    assert isinstance(tb.wiring, NetemWiring) and tb.route == tb.wiring.route
    with pytest.raises(UserError, match="netem needs"):
        Testbed(local, tmp_path / "x", links_backend="netem")


def test_testbed_installs_netem_after_up_and_removes_it_at_down(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No containers needed: a fake runtime says when it is up and down, the wiring when it is started."""
    import asyncio

    order: list[str] = []

    class FakeRuntime:
        block, containers = "127.77.7", {}
        collector_host, capture_iface = "127.0.0.1", "lo"

        async def prepare(self) -> None:
            order.append("prepare")

        def host_of(self, name: str) -> str:
            return "127.0.0.1"

        def env(self, extra: dict[str, str]) -> dict[str, str]:
            return dict(extra)

        async def up(self, services: object, launches: object = None) -> None:
            order.append("up")

        async def down(self) -> None:
            order.append("down")

    monkeypatch.setattr(testbed_mod, "make_runtime", lambda z, run, workdir: FakeRuntime())
    monkeypatch.setattr(NetemWiring, "start", lambda self, env=None: order.append("netem start"))
    monkeypatch.setattr(NetemWiring, "stop", lambda self: order.append("netem stop"))

    async def main() -> None:
        async with Testbed(experiment(runtime="docker"), tmp_path, links_backend="netem") as tb:
            assert tb.deployment and isinstance(tb.wiring, NetemWiring) and len(tb.wiring.links) > 0
            order.append("load")

    asyncio.run(asyncio.wait_for(main(), 10))
    assert order == ["prepare", "up", "netem start", "load", "down", "netem stop"]


# --- real namespaces -------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block (this thread only) in a named namespace: sockets made there stay there."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        yield
    finally:
        back = _libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)
        assert back == 0, "could not return to the test's own network namespace"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=5)


@dataclass
class Pair:
    """Two namespaces joined by a veth: A (192.0.2.1 on dev_a) and B (192.0.2.2 on dev_b), a sleeper in each
    so that tc reaches them as in production: `nsenter -t PID -n`."""

    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    pid_a: int
    pid_b: int

    def place(self, side: str, label: str = "") -> Place:
        pid, dev = (self.pid_a, self.dev_a) if side == "a" else (self.pid_b, self.dev_b)
        return Place(label or side, dev, nsenter_prefix(pid), pid, netns_inode(pid))

    def tc(self, side: str, *args: str) -> str:
        place = self.place(side)
        return subprocess.run(tc_argv(place, [*args, "dev", place.dev]), capture_output=True, text=True,
                              check=True, timeout=5).stdout


@pytest.fixture
def pair() -> Iterator[Pair]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and tc need root")
    tag = secrets.token_hex(3)
    ns_a, ns_b, dev_a, dev_b = f"mbt-{tag}-a", f"mbt-{tag}-b", f"mbt{tag}a", f"mbt{tag}b"
    made: list[str] = []
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (ns_a, ns_b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, dev_a, A_IP), (ns_b, dev_b, B_IP)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            sleepers.append(subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "60"]))
        for ns, proc in zip((ns_a, ns_b), sleepers, strict=True):
            want, deadline = os.stat(f"/run/netns/{ns}").st_ino, time.monotonic() + 3
            while netns_inode(proc.pid) != want:  # `ip netns exec` enters the namespace, then execs sleep
                assert time.monotonic() < deadline, "sleeper never entered its namespace"
                time.sleep(0.01)
        yield Pair(ns_a, ns_b, dev_a, dev_b, sleepers[0].pid, sleepers[1].pid)
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
        for ns in made:  # the veth goes with its namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=5)


class Echo:
    """A TCP echo server in a namespace (threads; the listening socket belongs to that namespace)."""

    def __init__(self, ns: str, ip: str, port: int) -> None:
        with in_netns(ns):
            self.sock = socket.create_server((ip, port))
        self.sock.settimeout(0.2)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                while data := conn.recv(4096):
                    conn.sendall(data)

    def close(self) -> None:
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def echo_servers(pair: Pair) -> Iterator[None]:
    servers = [Echo(pair.ns_b, B_IP, port) for port in (PORT, OTHER)]
    try:
        yield
    finally:
        for s in servers:
            s.close()


def connect(pair: Pair, port: int, timeout: float = 2.0) -> socket.socket:
    with in_netns(pair.ns_a):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((B_IP, port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(pair: Pair, port: int, count: int) -> list[float]:
    """Seconds per 1-byte echo on one connection (connect not counted)."""
    out = []
    with connect(pair, port) as sock:
        for _ in range(count):
            t0 = time.monotonic()
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            out.append(time.monotonic() - t0)
    return out


def class_packets(text: str) -> dict[str, int]:
    """`tc -s class show` -> packets sent per class id."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^class htb (\S+) .*?\n\s*Sent \d+ bytes (\d+) pkt", text, re.M)}


def qdisc_lines(text: str) -> dict[str, str]:
    return {line.split()[2]: line for line in text.splitlines() if line.startswith("qdisc ")}


def dropped(text: str, handle: str) -> int:
    m = re.search(rf"^qdisc \S+ {re.escape(handle)} .*?\n\s*Sent .*?\(dropped (\d+)", text, re.M)
    assert m, text
    return int(m.group(1))


LINK = Link("a>b:op", "a", "b", "op", 0.04, 0.06, target=f"{B_IP}:{PORT}")


def _wiring(pair: Pair, src_on_host: bool, leaf=marked_leaf, scale: float = 0.5) -> NetemWiring:
    """src in namespace A (its eth0 egress shapes fwd), or src 'on the host': then A plays the host, and fwd
    is shaped on A's end of B's veth (B's ingress), exactly as hop 0 on the docker bridge."""
    b = Endpoint(B_IP, pair.place("b"), pair.place("a", "b (host end)"))
    a = Endpoint(A_IP) if src_on_host else Endpoint(A_IP, pair.place("a"))
    wiring = NetemWiring(lambda name: {"a": a, "b": b}[name], scale, leaf)
    link = Link(LINK.name, LINK.src, LINK.dst, LINK.plane, LINK.delay_fwd, LINK.delay_rev, target=LINK.target)
    assert wiring.route(link) == link.target
    return wiring


@needs_root
@pytest.mark.parametrize("src_on_host", [False, True], ids=["src-in-namespace", "src-on-host"])
def test_only_the_links_class_gets_the_links_packets(pair: Pair, src_on_host: bool) -> None:
    wiring = _wiring(pair, src_on_host)
    link = wiring.links[0]
    try:
        wiring.start()
        fwd, rev = wiring.directions[(link.name, "fwd")], wiring.directions[(link.name, "rev")]
        assert fwd.place.dev == pair.dev_a and rev.place.dev == pair.dev_b
        # each way's delay (0.04 and 0.06 paper s at 0.5) sits in its own leaf
        assert "limit 1020p" in qdisc_lines(pair.tc("a", "qdisc", "show"))[fwd.handle]
        assert "limit 1030p" in qdisc_lines(pair.tc("b", "qdisc", "show"))[rev.handle]
        with echo_servers(pair):
            round_trips(pair, OTHER, 5)
            a0, b0 = (class_packets(pair.tc(side, "-s", "class", "show")) for side in "ab")
            assert a0[fwd.classid] == 0 and b0[rev.classid] == 0, (a0, b0)
            assert a0["1:1"] >= 6 and b0["1:1"] >= 6  # SYN (SYN-ACK) + 5 echoes went by the default class
            round_trips(pair, PORT, 5)
            a1, b1 = (class_packets(pair.tc(side, "-s", "class", "show")) for side in "ab")
        assert a1[fwd.classid] >= 6 and b1[rev.classid] >= 6, (a1, b1)
        assert a1["1:1"] - a0["1:1"] <= 2 and b1["1:1"] - b0["1:1"] <= 2  # an ARP at most, nothing of the link
        assert a1["1:2"] == b1["1:2"] == 0  # nothing cut
        wiring.set_delay(link, 0.2, 0.4)  # paper seconds, scaled like the rest
        assert "limit 1100p" in qdisc_lines(pair.tc("a", "qdisc", "show"))[fwd.handle]
        assert "limit 1200p" in qdisc_lines(pair.tc("b", "qdisc", "show"))[rev.handle]
    finally:
        wiring.stop()
    assert "htb" not in pair.tc("a", "qdisc", "show") and "htb" not in pair.tc("b", "qdisc", "show")


@needs_root
def test_cut_stops_the_link_and_heal_restores_it(pair: Pair) -> None:
    wiring = _wiring(pair, src_on_host=False)
    link = wiring.links[0]
    try:
        wiring.start()
        with echo_servers(pair):
            established = connect(pair, PORT)
            wiring.cut(link)
            wiring.cut(link)  # idempotent
            with pytest.raises(OSError):  # the SYNs are dropped: a time-out, not a refusal
                connect(pair, PORT, timeout=0.4)
            assert round_trips(pair, OTHER, 2)  # another port of the same host still works
            established.settimeout(0.3)
            established.sendall(b"held")
            with pytest.raises(TimeoutError):
                established.recv(4)
            assert dropped(pair.tc("a", "-s", "qdisc", "show"), "fff2:") > 0
            wiring.heal(link)
            wiring.heal(link)  # idempotent
            assert round_trips(pair, PORT, 2)
            established.settimeout(4)  # the held bytes come through at TCP's next retransmission
            assert established.recv(4) == b"held"
            established.close()
            # the reply direction alone: the SYN gets through, the SYN-ACK is dropped in B
            rev = wiring.directions[(link.name, "rev")]
            run_command(tc_argv(rev.place, cut_command(rev)))
            with pytest.raises(OSError):
                connect(pair, PORT, timeout=0.4)
            assert dropped(pair.tc("b", "-s", "qdisc", "show"), "fff2:") > 0
            run_command(tc_argv(rev.place, heal_command(rev)))
            assert round_trips(pair, PORT, 1)
    finally:
        wiring.stop()


@needs_root
def test_commands_for_a_dead_namespace_are_skipped(pair: Pair) -> None:
    wiring = _wiring(pair, src_on_host=False)
    link = wiring.links[0]
    try:
        wiring.start()
        key = (link.name, "fwd")
        gone = Place("gone", pair.dev_a, nsenter_prefix(pair.pid_a), pair.pid_a, 1)  # a namespace that is no more
        wiring.directions[key] = dataclasses.replace(wiring.directions[key], place=gone)
        wiring.cut(link)  # fwd skipped, rev cut
        assert any("gone" in s for s in wiring.skipped)
        assert dropped(pair.tc("a", "-s", "qdisc", "show"), "fff2:") == 0
        assert "flowid 1:2" in pair.tc("b", "filter", "show")
    finally:
        wiring.stop()


@needs_root
@pytest.mark.skipif(not probe_netem().available, reason=f"no netem here: {probe_netem().reason}")
def test_netem_delays_a_round_trip_by_the_configured_amount(pair: Pair) -> None:
    wiring = _wiring(pair, src_on_host=False, leaf=netem_leaf, scale=0.5)  # 0.04 + 0.06 paper s -> 50 ms
    link = wiring.links[0]
    try:
        wiring.start()
        with echo_servers(pair):
            assert statistics.median(round_trips(pair, OTHER, 5)) < 0.01
            assert statistics.median(round_trips(pair, PORT, 5)) == pytest.approx(0.05, rel=0.2)
            wiring.set_delay(link, 0.1, 0.1)
            assert statistics.median(round_trips(pair, PORT, 5)) == pytest.approx(0.1, rel=0.2)
    finally:
        wiring.stop()
