"""The capture process: bytes counted on the wire per TCP 4-tuple, from an AF_PACKET socket behind a BPF filter.

It runs as its own process, so the harness's GIL never slows it down and it never slows the harness
(`harness.measure.wire.WireCapture` starts and stops it):

    python -m harness.measure.capture_process --iface lo --net 127.A.B.0/24 --out FILE.csv [--interval 1.0]
        [--reader raw]

(`python -m harness.measure.wire` is the same entry.) It prints one line, ``ready``, once its socket is bound (or
``unavailable: <reason>`` and exits 3), rewrites FILE.csv (`harness.history.flows`) atomically every
``interval`` seconds and once more on SIGTERM/SIGINT (then exits 0), and keeps a JSON sidecar
(``stats_path(FILE.csv)``, i.e. FILE.stats.json: kernel_packets, kernel_drops, packets_counted,
peak_packets_per_second, cpu_seconds, max_lag_seconds, final, ...), rewritten with the CSV. It also stops, with
a final write, when its parent dies (it checks twice a second).

Counting rules:
  * On a loopback device every packet passes the tap twice (leaving and arriving); only the arriving copy is
    counted (the filter's ``inbound``; the packet type is checked again here). On other devices each packet
    passes once and both directions are counted.
  * Only IPv4 + TCP, and only packets whose source or destination lies in ``--net``.
  * Per (src, sport, dst, dport): packets, ip_bytes (IP total length), payload_bytes (IP total length minus
    the IP and TCP headers), and SYN/FIN/RST counts. A GSO packet whose IP total length is 0 (IPv4 BIG TCP,
    > 64 KiB) is sized from the frame's original length (PACKET_AUXDATA's tp_len).
  * Retransmitted segments are on the wire, so they are counted: payload_bytes matches TCP's own
    tcpi_bytes_sent, which can exceed what the application wrote (spurious tail-loss probes on a busy host).

The socket and its filter are `harness.measure.capture_socket`'s; the two readers' parsers are
`harness.measure.frames`'. Kernel drops (PACKET_STATISTICS) are in the sidecar; they are never hidden.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from harness.history.flows import Flow, replace_file, stats_path, write_flows
from harness.measure.capture_socket import (
    ANCILLARY,
    DEFAULT_BUFFER,
    ETH_P_IP,
    PACKET_OUTGOING,
    PACKET_STATISTICS,
    SOL_PACKET,
    CaptureUnavailable,
    frame_length,
    kernel_stamp,
    open_socket,
)
from harness.measure.frames import (
    READERS,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Frame,
    Parsed,
    parse_frame,
    parse_frame_layers,
)

EXIT_UNAVAILABLE = 3
SNAP = 256  # bytes copied per packet: link (14) + IP (<= 60) + TCP (<= 60) headers fit with room to spare
# Sparse traffic (the last drain found fewer than SPARSE packets) is read in batches BATCH_WAIT apart rather than
# a wake-up per packet: a run's 300-3,000 packets/s then cost ~1% of a core instead of 10-17% (the wake-up,
# select and the failing read of an emptied socket, ~40 us, were most of it); dense traffic is read at once.
SPARSE, BATCH_WAIT = 256, 0.02


class Capture:
    """The counting loop: drain the socket, count, rewrite the CSV every interval, stop on a signal."""

    def __init__(self, iface: str, net: str, reader: str = "raw", *, buffer: int = DEFAULT_BUFFER,
                 outgoing: bool | None = None, kernel_filter: bool = True) -> None:
        """Open the socket (capture_socket.open_socket: `buffer`, `outgoing`, `kernel_filter` are its own)."""
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, not {reader!r}")
        self.net = ipaddress.IPv4Network(net, strict=False)
        self._mask, self._addr = int(self.net.netmask), int(self.net.network_address)
        self.sock, self.info = open_socket(iface, self.net, buffer=buffer, outgoing=outgoing,
                                           kernel_filter=kernel_filter)
        self.info["reader"] = reader
        self.link: int = self.info["link_header"]
        self.skip_outgoing: bool = self.info["skip_outgoing"]
        self.flows: dict[tuple[int, int, int, int], list[int]] = {}
        self.buf = bytearray(SNAP)
        self.seen = self.counted = self.skipped_outgoing = self.skipped_other = 0
        self.kernel_packets = self.kernel_drops = 0
        self.kernel_stats()  # the counters run from the socket's creation: start them at ready
        self.kernel_packets = self.kernel_drops = 0
        self.stop_reason: str | None = None
        self.started = time.time()
        self.lag = 0.0  # the longest a packet waited in the socket before it was counted, seconds
        self.peak = 0.0  # the highest packets/s over one write interval
        self._last = (time.monotonic(), 0)
        self.parse: Callable[[Frame, int, int], Parsed | None] = parse_frame if reader == "raw" else parse_frame_layers

    def _count(self, p: Parsed | None) -> None:
        """Add one parsed packet (or count it as other traffic)."""
        mask, addr = self._mask, self._addr
        if p is None or (p[0] & mask != addr and p[2] & mask != addr):
            self.skipped_other += 1
            return
        key = p[:4]
        rec = self.flows.get(key)
        if rec is None:
            rec = self.flows[key] = [0, 0, 0, 0, 0, 0]
        rec[0] += 1
        rec[1] += p[4]
        rec[2] += p[5]
        flags = p[6]
        if flags & 0x07:
            rec[3] += flags & TCP_SYN and 1
            rec[4] += flags & TCP_FIN
            rec[5] += flags & TCP_RST and 1
        self.counted += 1

    def _lagged(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        """Note how long the first packet of a batch waited (the rest of a batch waited less)."""
        stamp = kernel_stamp(ancdata)
        if stamp is not None:
            self.lag = max(self.lag, time.time() - stamp)

    def _drain(self, limit: int = 4096) -> bool:
        """Read up to `limit` queued packets and count them; True if there may be more.

        Only the first SNAP bytes of a frame are copied (MSG_TRUNC: the kernel still reports its length).
        """
        recv, bufs, view, link, parse = self.sock.recvmsg_into, [self.buf], memoryview(self.buf), self.link, self.parse
        try:
            for i in range(limit):
                n, ancdata, _flags, sa = recv(bufs, ANCILLARY, socket.MSG_TRUNC)
                self.seen += 1
                if not i:
                    self._lagged(ancdata)
                if self.skip_outgoing and sa[2] == PACKET_OUTGOING:
                    self.skipped_outgoing += 1
                    continue
                self._count(parse(view[:min(n, SNAP)], frame_length(n, ancdata), link) if sa[1] == ETH_P_IP
                            else None)
            return True
        except BlockingIOError:
            return False

    def drain_all(self, budget: float = 2.0) -> None:
        """Count everything queued now, never taking more than `budget` seconds on a busy link."""
        deadline = time.monotonic() + budget
        while self._drain() and time.monotonic() < deadline:
            pass

    def kernel_stats(self) -> None:
        """Fold in the kernel's counters (PACKET_STATISTICS resets them on every read)."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return
        packets, drops = struct.unpack("II", raw.ljust(8, b"\0"))
        self.kernel_packets += packets  # includes the dropped ones
        self.kernel_drops += drops

    def snapshot(self) -> list[Flow]:
        ntoa = socket.inet_ntoa
        return [Flow(ntoa(src.to_bytes(4, "big")), sport, ntoa(dst.to_bytes(4, "big")), dport, *rec)
                for (src, sport, dst, dport), rec in sorted(self.flows.items())]

    def write(self, out: Path, stats: Path, *, final: bool = False) -> None:
        self.kernel_stats()
        now = time.monotonic()
        then, seen = self._last
        if now - then >= 0.2:  # (the final write may follow the last periodic one closely)
            self.peak = max(self.peak, (self.kernel_packets - seen) / (now - then))
            self._last = (now, self.kernel_packets)
        write_flows(out, self.snapshot())
        cpu = os.times()
        doc = {**self.info, "pid": os.getpid(), "started": self.started, "updated": time.time(), "final": final,
               "stop_reason": self.stop_reason, "kernel_packets": self.kernel_packets,
               "kernel_drops": self.kernel_drops, "packets_seen": self.seen, "packets_counted": self.counted,
               "skipped_outgoing": self.skipped_outgoing, "skipped_other": self.skipped_other,
               "flows": len(self.flows), "peak_packets_per_second": round(self.peak),
               "max_lag_seconds": round(self.lag, 4), "cpu_seconds": round(cpu.user + cpu.system, 3)}
        replace_file(stats, json.dumps(doc, indent=1) + "\n")

    def run(self, out: Path, stats: Path, interval: float, parent: int) -> int:
        """Count until SIGTERM/SIGINT or the parent's death, rewriting `out` and `stats` every `interval` s."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self.stop_reason = self.stop_reason or signal.Signals(signum).name

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        self.write(out, stats)
        print("ready", flush=True)
        next_write = time.monotonic() + interval
        while self.stop_reason is None:
            seen = self.seen
            more = self._drain()
            batch = self.seen - seen
            if os.getppid() != parent:  # orphaned: the harness is gone, and with it whoever would stop us
                self.stop_reason = self.stop_reason or "parent died"
            now = time.monotonic()
            if now >= next_write:
                self.write(out, stats)
                next_write = max(next_write + interval, now + interval / 2)
            if not more and self.stop_reason is None:
                readable = select.select([self.sock, wake_r], [], [], min(max(next_write - now, 0.0), 0.5))[0]
                if self.sock in readable and batch < SPARSE:  # let a batch gather: a wake-up costs ~40 us
                    select.select([wake_r], [], [], BATCH_WAIT)
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
        self.drain_all()
        self.write(out, stats, final=True)
        self.sock.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.measure.capture_process", description=__doc__.splitlines()[0])
    ap.add_argument("--iface", default="lo")
    ap.add_argument("--net", default="0.0.0.0/0", type=lambda s: str(ipaddress.IPv4Network(s, strict=False)),
                    help="count only packets with source or destination in this IPv4 network")
    ap.add_argument("--out", required=True, type=Path, help="per-flow CSV, rewritten atomically")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between CSV rewrites")
    ap.add_argument("--stats", type=Path, help="JSON sidecar (default: FILE.stats.json next to --out)")
    ap.add_argument("--reader", choices=READERS, default="raw",
                    help="raw: fixed IPv4/TCP headers from scapy's socket (fast); layers: scapy's dissection")
    ap.add_argument("--buffer", type=int, default=DEFAULT_BUFFER, help="socket receive buffer, bytes")
    ap.add_argument("--outgoing", choices=("auto", "yes", "no"), default="auto",
                    help="count PACKET_OUTGOING copies (auto: not on loopback devices)")
    ap.add_argument("--no-kernel-filter", dest="kernel_filter", action="store_false",
                    help="check every packet in user space only (no BPF filter, no PACKET_IGNORE_OUTGOING)")
    ap.add_argument("--parent", type=int, default=os.getppid(), help="exit when this process stops being our parent")
    args = ap.parse_args(argv)
    if args.interval <= 0:
        ap.error("--interval must be > 0")
    outgoing = {"auto": None, "yes": True, "no": False}[args.outgoing]
    try:
        cap = Capture(args.iface, args.net, args.reader, buffer=args.buffer, outgoing=outgoing,
                       kernel_filter=args.kernel_filter)
    except CaptureUnavailable as e:
        print(f"unavailable: {e}", flush=True)
        print(f"wire capture unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return cap.run(args.out, args.stats or stats_path(args.out), args.interval, args.parent)


if __name__ == "__main__":
    sys.exit(main())
