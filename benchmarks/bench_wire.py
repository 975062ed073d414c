"""Does the scapy wire capture keep up? Its highest packet rate without drops, beside the rates runs produce.

    python benchmarks/bench_wire.py [--phase rate,default,figs,open] [--seconds 2] [--senders 2] [--buffer 1048576]

rate   For each reader (raw: fixed headers from scapy's socket; layers: scapy's dissection) and each link (lo, and
       a throwaway labelled docker bridge with a network namespace on a veth port, removed afterwards): offered
       packet rates doubling from 500/s, then bisected, `--senders` paced TCP streams of 100-byte writes for
       `--seconds` each, the capture's socket buffer cut to `--buffer` bytes so a reader that falls behind
       drops within the step instead of hiding in a 128 MiB backlog. Prints the highest rate with no kernel
       drops and every packet counted, the capture's CPU per packet, and where the senders ran out first.
default, figs, open
       The packet rates runs produce, each measured by the capture itself (wire.stats.json: mean over the
       run, peak over one second, drops, longest wait in the socket) from one short real run each:
         - the default run, `harness run --design centralised --fault slm-crash`, with an independent tcpdump
           capture of the same run: per-link wire bytes of links.csv against tcpdump's (total and worst link);
         - the heaviest point of each shipped Fig 6-8 spec (distributed, highest h_r / n), 6 requests;
         - a 100 workflows/s open-loop run (centralised, no fault, 300 requests).
Prints a note and exits 0 where no capture is possible; exits 1 if the tcpdump check fails (1% total, 3% link).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.measure.tcpdump import Tcpdump, agreement, block_of, compare_links, flows_from_pcap  # noqa: E402
from harness.measure.wire import WireCapture, probe  # noqa: E402

SENDER = """
import socket, sys, time
host, port, src, rate, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
s = socket.create_connection((host, port), source_address=(src, 0))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg, sent, t0 = b"m" * 100, 0, time.monotonic()
while (now := time.monotonic()) < t0 + seconds:
    due = min(max(int((now - t0) * rate) - sent, 0), 2000)
    for _ in range(due):
        s.send(msg)
    sent += due
    if not due:
        time.sleep(0.0005)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(sent)
"""


class Link:
    """Where the senders run and the capture listens: loopback, or a docker bridge with a namespace on it."""

    def __init__(self, name: str, iface: str, net: str, server: str, clients: list[str], prefix: list[str]) -> None:
        self.name, self.iface, self.net, self.server, self.clients, self.prefix = (
            name, iface, net, server, clients, prefix)


@contextlib.contextmanager
def loopback(senders: int) -> Iterator[Link]:
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    yield Link("lo", "lo", f"{block}.0/24", f"{block}.1", [f"{block}.{10 + i}" for i in range(senders)], [])


@contextlib.contextmanager
def docker_bridge(senders: int) -> Iterator[Link]:
    """A labelled docker bridge network (as a run makes), and a network namespace plugged into it by a veth pair,
    standing in for a container: its packets cross the bridge as a container's do. All removed on exit."""
    from docker.types import IPAMConfig, IPAMPool

    import docker
    from harness.runtime.docker import free_block, labels

    tag = f"{os.getpid() % 100000:05d}"
    block, bridge, ns, veth = free_block(), f"mbw{tag}", f"mbwire{tag}", f"mbwv{tag}"
    client = docker.from_env()
    net = client.networks.create(
        f"mbwire{tag}", driver="bridge", internal=True, labels=labels(f"bench-wire-{tag}"),
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=f"{block}.0/24", gateway=f"{block}.1")]),
        options={"com.docker.network.bridge.name": bridge})
    ip = ["ip"]
    try:
        for cmd in ([*ip, "netns", "add", ns], [*ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                                                   "netns", ns],
                    [*ip, "link", "set", veth, "master", bridge, "up"],
                    [*ip, "-n", ns, "link", "set", "eth0", "up"], [*ip, "-n", ns, "link", "set", "lo", "up"]):
            subprocess.run(cmd, check=True, capture_output=True)
        clients = [f"{block}.{10 + i}" for i in range(senders)]
        for addr in clients:
            subprocess.run([*ip, "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"], check=True, capture_output=True)
        yield Link("docker bridge", bridge, f"{block}.0/24", f"{block}.1", clients, ["ip", "netns", "exec", ns])
    finally:
        subprocess.run([*ip, "link", "del", veth], capture_output=True)
        subprocess.run([*ip, "netns", "del", ns], capture_output=True)
        net.remove()


def step(link: Link, reader: str, rate: float, seconds: float, buffer: int, tmp: Path) -> dict[str, Any]:
    """Offer `rate` packets/s (data segments; the ACKs come on top) for `seconds`; what the capture made of it."""
    cap = WireCapture(link.net, tmp / f"{reader}.csv", iface=link.iface, reader=reader, buffer=buffer,
                      interval=0.5).start()
    servers, readers, procs = [], [], []
    try:
        for addr in link.clients:
            lst = socket.socket()
            lst.bind((link.server, 0))
            lst.listen(1)
            servers.append(lst)
            procs.append(subprocess.Popen([*link.prefix, sys.executable, "-c", SENDER, link.server,
                                           str(lst.getsockname()[1]), addr, str(rate / len(link.clients)),
                                           str(seconds)], stdout=subprocess.PIPE, text=True))
        for lst in servers:
            lst.settimeout(10)
            conn, _ = lst.accept()
            t = threading.Thread(target=_sink, args=(conn,), daemon=True)
            t.start()
            readers.append(t)
        t0 = time.monotonic()
        for p in procs:
            p.communicate(timeout=seconds + 30)
        wall = time.monotonic() - t0
        for t in readers:
            t.join(5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for lst in servers:
            lst.close()
        with contextlib.suppress(Exception):
            cap.stop()
    s = cap.stats()
    cpu_per_packet = s["cpu_seconds"] / max(s["packets_counted"], 1)  # (start-up included: an upper bound)
    return {"offered": rate, "rate": s["kernel_packets"] / wall, "drops": s["kernel_drops"],
            "complete": s["kernel_drops"] == 0 and s["packets_counted"] == s["kernel_packets"],
            "lag": s["max_lag_seconds"], "cpu_us": cpu_per_packet * 1e6}


def _sink(conn: socket.socket) -> None:
    with conn:
        while conn.recv(1 << 20):
            pass
        conn.send(b"x")


def max_rate(link: Link, reader: str, seconds: float, buffer: int, tmp: Path) -> str:
    """Double the offered rate until a step drops (or the senders cannot offer more), then bisect 3 times."""
    good: dict[str, Any] | None = None
    bad: dict[str, Any] | None = None
    rate = 500.0
    while bad is None:
        r = step(link, reader, rate, seconds, buffer, tmp)
        if not r["complete"]:
            bad = r
        elif good and r["rate"] < 1.15 * good["rate"]:  # doubled the offer, barely more packets: senders' limit
            return f"{_fmt(r)}; no drops up to the senders' limit (the machine, not the capture)"
        else:
            good, rate = r, rate * 2
    lo_rate, hi_rate = (good["offered"] if good else 0.0), bad["offered"]
    for _ in range(3):
        mid = (lo_rate + hi_rate) / 2
        r = step(link, reader, mid, seconds, buffer, tmp)
        if r["complete"]:
            good, lo_rate = r, mid
        else:
            hi_rate = mid
    return f"{_fmt(good)}; drops from an offered {hi_rate:,.0f} data packets/s" if good else f"drops at {_fmt(bad)}"


def _fmt(r: dict[str, Any]) -> str:
    return (f"{r['rate']:,.0f} packets/s without drops (offered {r['offered']:,.0f} data packets/s; capture CPU "
            f"{r['cpu_us']:.1f} us/packet incl. start-up, longest wait {r['lag'] * 1000:.0f} ms)")


def phase_rate(args: argparse.Namespace, tmp: Path) -> None:
    print(f"== highest packet rate without drops ({args.senders} paced senders, {args.seconds:g} s a step, "
          f"socket buffer {args.buffer:,} B)")
    for make in (loopback, docker_bridge):
        try:
            with make(args.senders) as link:
                for reader in ("raw", "layers"):
                    print(f"  {link.name:13} {reader:6} {max_rate(link, reader, args.seconds, args.buffer, tmp)}",
                          flush=True)
        except Exception as e:  # (no docker here, no netns): say so, go on
            print(f"  {make.__name__}: not measured: {type(e).__name__}: {e}")


def harness_run(out: Path, *argv: str, timeout: float = 900) -> dict[str, Any]:
    """One `harness run`; the capture's own account of it (wire.stats.json) with its mean rate."""
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"harness run {' '.join(argv)} failed: {proc.stderr.strip()[-800:]}")
    s = json.loads((out / "wire.stats.json").read_text())
    s["mean"] = s["kernel_packets"] / max(s["updated"] - s["started"], 1e-9)
    return s


def _print_run(name: str, s: dict[str, Any]) -> None:
    print(f"  {name:34} {s['kernel_packets']:>8,} packets, mean {s['mean']:>7,.0f}/s, "
          f"peak {s['peak_packets_per_second']:>7,}/s (1 s), kernel drops {s['kernel_drops']}, "
          f"longest wait {s['max_lag_seconds'] * 1000:.0f} ms, capture CPU {s['cpu_seconds']:.2f} s", flush=True)


def heaviest(spec: Path) -> dict[str, Any]:
    """The spec's base with its heaviest grid point: distributed, the largest h_r and n, the smallest t_h_mult."""
    doc = yaml.safe_load(spec.read_text())
    z = dict(doc["base"])
    z["design"] = "distributed"
    for key, values in (doc.get("grid") or {}).items():
        if key != "design":
            z[key] = min(values) if key == "t_h_mult" else max(values)
    return z


def phase_default(tmp: Path) -> bool:
    """The default run under tcpdump: its packet rate, and links.csv's wire bytes against tcpdump's."""
    out, pcap = tmp / "default", tmp / "default.pcap"
    dump = Tcpdump("lo", pcap).start()
    try:
        s = harness_run(out, "--design", "centralised", "--fault", "slm-crash")
    finally:
        summary = dump.stop()
    _print_run("default run (centralised slm-crash)", s)
    rows = compare_links(out, flows_from_pcap(pcap, block_of(out)))
    total, worst = agreement(rows)
    link = max(rows, key=lambda r: abs(r["wire_fwd"] - r["other_fwd"]) + abs(r["wire_rev"] - r["other_rev"]))
    ok = abs(total) <= 0.01 and worst <= 0.03 and dump.dropped() == 0
    print(f"  tcpdump check: {len(rows)} links, {sum(r['wire_fwd'] + r['wire_rev'] for r in rows):,} B (links.csv) "
          f"vs {sum(r['other_fwd'] + r['other_rev'] for r in rows):,} B (tcpdump): total {total:+.4%}, worst "
          f"link {worst:.3%} ({link['link']}); tcpdump: {summary}: {'PASS' if ok else 'FAIL'} (1% / 3%)")
    return ok


def phase_figs(tmp: Path) -> None:
    for fig in ("fig6", "fig7", "fig8"):
        z = heaviest(ROOT / "experiments" / f"{fig}.yaml")
        cfg = tmp / f"{fig}.yaml"
        cfg.write_text(yaml.safe_dump(z))
        point = ", ".join(f"{k}={z[k]}" for k in ("design", "n", "h_r", "t_h_mult", "time_scale") if k in z)
        try:
            _print_run(f"{fig} heaviest ({point})", harness_run(tmp / fig, "--config", str(cfg), "--load", "builtin"))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"  {fig}: {e}")


def phase_open(tmp: Path) -> None:
    try:
        _print_run("open loop 100 workflows/s", harness_run(tmp / "open", "--design", "centralised", "--fault",
                                                            "none", "--rate", "100", "--requests", "300"))
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"  open loop 100 workflows/s: {e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", default="rate,default,figs,open", help="comma-separated: rate, default, figs, open")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of one offered-rate step")
    ap.add_argument("--senders", type=int, default=2, help="paced sender processes")
    ap.add_argument("--buffer", type=int, default=1 << 20, help="capture socket buffer in the rate search, bytes")
    ap.add_argument("--keep", action="store_true", help="keep the runs' folders (printed)")
    args = ap.parse_args()
    ok, why = probe()
    if not ok:
        print(f"wire capture unavailable: {why}; nothing to measure")
        return 0
    phases = set(args.phase.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-wire-"))
    print(f"{os.cpu_count()} CPUs; work in {tmp}")
    good = True
    try:
        if "rate" in phases:
            phase_rate(args, tmp)
        if phases & {"default", "figs", "open"}:
            print("== packet rates of runs (the capture's own count, raw reader)")
        if "default" in phases:
            good = phase_default(tmp)
        if "figs" in phases:
            phase_figs(tmp)
        if "open" in phases:
            phase_open(tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
