"""An independent capture of a run by tcpdump, to check the wire capture's per-link bytes against.

Independent on both sides of the count: tcpdump takes the packets (libpcap's own TPACKET ring, its own
filter), and scapy's layers (not the capture's raw header parser) read them back from the pcap file.

    dump = Tcpdump("lo", Path("run.pcap")).start()   # all of 127.0.0.0/8 TCP: the run's block is not known yet
    ... run ...
    dump.stop()
    rows = compare_links(run_dir, flows_from_pcap(Path("run.pcap"), block_of(run_dir)))
"""

from __future__ import annotations

import csv
import ipaddress
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TypedDict

from harness.history.flows import Flow
from harness.measure.attribution import by_endpoint
from harness.measure.capture_socket import CaptureUnavailable


class Tcpdump:
    """tcpdump writing the arriving copy (-Q in) of every TCP packet of `net` on `iface` to `pcap`."""

    def __init__(self, iface: str, pcap: Path, net: str = "127.0.0.0/8", snap: int = 96) -> None:
        self.argv = ["tcpdump", "-i", iface, "-n", "-s", str(snap), "-B", str(64 << 10), "-U", "-w", str(pcap)]
        if iface == "lo":
            self.argv[3:3] = ["-Q", "in"]
        self.argv.append(f"tcp and net {ipaddress.IPv4Network(net, strict=False)}")
        self.pcap = pcap
        self.proc: subprocess.Popen[bytes] | None = None
        self._err: IO[bytes] | None = None
        self.summary = ""

    def start(self, timeout: float = 10.0) -> Tcpdump:
        """Start tcpdump and wait until it listens; CaptureUnavailable if it cannot."""
        self._err = tempfile.TemporaryFile(prefix="tcpdump-")  # noqa: SIM115 -- lives as long as the process
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self._err)
        except OSError as e:
            raise CaptureUnavailable(f"cannot run tcpdump: {e}") from e
        deadline = time.monotonic() + timeout
        while b"listening on" not in self._text().encode() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaptureUnavailable(f"tcpdump exited: {self._text()[-500:]}")
            time.sleep(0.05)
        return self

    def _text(self) -> str:
        assert self._err is not None
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def stop(self, settle: float = 0.5, wait: float = 10.0) -> str:
        """Let tcpdump catch up, then SIGINT it (it flushes the file) and return its closing lines ('N packets
        captured, ... dropped').

        Catching up: on a busy host tcpdump can lag behind the kernel by a second or more, and a SIGINT then ends
        it before it has read what is still in its socket buffer (not counted as dropped: those packets are
        simply never written). So it is stopped only once its file (written per packet, -U) has not grown for
        `settle` seconds, or after `wait`. Found when runs stopped measuring their monolith reference after each
        run (a cache): the harness then exited at once, and the comparison missed the last heartbeats."""
        if self.proc is None:
            return self.summary
        deadline, last, since = time.monotonic() + wait, -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.pcap.stat().st_size if self.pcap.exists() else 0
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= settle:
                break
            time.sleep(0.05)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.summary = " ".join(line for line in self._text().splitlines() if "packets" in line)
        assert self._err is not None
        self._err.close()
        self.proc = None
        return self.summary

    def dropped(self) -> int:
        """tcpdump's own 'packets dropped by kernel', from its closing lines."""
        words = self.summary.split()
        return int(words[words.index("dropped") - 2]) if "dropped" in words else 0


def flows_from_pcap(pcap: Path, net: str) -> list[Flow]:
    """Per-4-tuple counts of the IPv4/TCP packets of `net` in a pcap file, read through scapy's layers."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    network = ipaddress.IPv4Network(net, strict=False)
    acc: dict[tuple[str, int, str, int], list[int]] = {}
    with PcapReader(str(pcap)) as packets:
        for pkt in packets:
            ip, tcp = pkt.getlayer(IP), pkt.getlayer(TCP)
            if ip is None or tcp is None or ip.frag:
                continue
            if ipaddress.IPv4Address(ip.src) not in network and ipaddress.IPv4Address(ip.dst) not in network:
                continue
            size = ip.len or (pkt.wirelen or len(pkt)) - 14
            rec = acc.setdefault((ip.src, tcp.sport, ip.dst, tcp.dport), [0] * 6)
            flags = int(tcp.flags)
            for i, v in enumerate((1, size, max(0, size - ip.ihl * 4 - tcp.dataofs * 4),
                                   bool(flags & 0x02), bool(flags & 0x01), bool(flags & 0x04))):
                rec[i] += v
    return [Flow(*key, *rec) for key, rec in sorted(acc.items())]


def block_of(run_dir: Path) -> str:
    """The run's address block (127.a.b.0/24), from the listen addresses links.json records."""
    links = json.loads((run_dir / "links.json").read_text())
    nets = {str(ipaddress.IPv4Network(f"{link['listen'].rpartition(':')[0]}/24", strict=False)) for link in links}
    if len(nets) != 1:
        raise ValueError(f"the links of {run_dir} span {sorted(nets)}, not one block")
    return nets.pop()


class LinkComparison(TypedDict):
    """One link's bytes each way as links.csv has them (`wire_*`) and as another capture counted them."""

    link: str
    wire_fwd: int
    wire_rev: int
    other_fwd: int
    other_rev: int


def compare_links(run_dir: Path, flows: list[Flow]) -> list[LinkComparison]:
    """Per link of a local (proxy) run: links.csv's wire bytes beside the same bytes counted in `flows`.

    Each link's bytes are those towards / from the address its source dials (the proxy's listen address),
    as harness/experiment/run.py attributes them. Rows: link, wire_fwd, wire_rev, other_fwd, other_rev.
    """
    listen = {link["name"]: link["listen"] for link in json.loads((run_dir / "links.json").read_text())}
    theirs = by_endpoint(flows, listen)
    with (run_dir / "links.csv").open() as fh:
        return [{"link": r["link"], "wire_fwd": int(r["wire_bytes_fwd"]), "wire_rev": int(r["wire_bytes_rev"]),
                 "other_fwd": theirs[r["link"]]["to"], "other_rev": theirs[r["link"]]["from"]}
                for r in csv.DictReader(fh) if r["link"] in listen]


def agreement(rows: list[LinkComparison]) -> tuple[float, float]:
    """(relative difference of the totals, the largest relative difference of one link and direction)."""
    ours = sum(r["wire_fwd"] + r["wire_rev"] for r in rows)
    other = sum(r["other_fwd"] + r["other_rev"] for r in rows)
    worst = 0.0
    for r in rows:
        for a, b in ((r["wire_fwd"], r["other_fwd"]), (r["wire_rev"], r["other_rev"])):
            worst = max(worst, abs(a - b) / max(b, 1) if a != b else 0.0)
    return (ours - other) / max(other, 1), worst
