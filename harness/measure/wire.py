"""wire: bytes counted on the wire per TCP 4-tuple, from a raw AF_PACKET socket (no scapy, no libpcap).

The services count their own bytes; this counts what the kernel actually carried, to cross-check those counts
and to attribute traffic to links (a proxy's listen address) and planes (a service's op/heartbeat/state port).

The capture runs as its own process, so the harness's GIL never slows it down and it never slows the harness:

    python -m harness.measure.wire --iface lo --net 127.A.B.0/24 --out FILE.csv [--interval 1.0]

It prints one line, ``ready``, once its socket is bound (or ``unavailable: <reason>`` and exits 3), rewrites
FILE.csv atomically every ``interval`` seconds and once more on SIGTERM/SIGINT (then exits 0), and keeps a JSON
sidecar (``stats_path(FILE.csv)``, i.e. FILE.stats.json: kernel_packets, kernel_drops, packets_counted,
cpu_seconds, max_lag_seconds, final, ...), rewritten with the CSV. It also stops, with a final write, when its
parent dies.

Counting rules:
  * On a loopback device every packet passes the tap twice (leaving and arriving); only the arriving copy is
    counted (packet type PACKET_OUTGOING is skipped). On other devices each packet passes once and both
    directions are counted.
  * Only IPv4 + TCP, and only packets whose source or destination lies in ``--net``.
  * Per (src, sport, dst, dport): packets, ip_bytes (IP total length), payload_bytes (IP total length minus
    the IP and TCP headers), and SYN/FIN/RST counts. A GSO packet whose IP total length is 0 (IPv4 BIG TCP,
    > 64 KiB) is sized from the frame length the kernel reports.
  * Retransmitted segments are on the wire, so they are counted: payload_bytes matches TCP's own
    tcpi_bytes_sent, which can exceed what the application wrote (spurious tail-loss probes on a busy host).

How: a classic BPF filter does the net / TCP / not-outgoing selection in the kernel and cuts each packet to
its first 256 bytes; packets are read from a TPACKET_V3 ring (shared memory, no system call per packet; about
1 us of CPU per packet), or, where no ring can be had, with recvfrom (about 4-5 us per packet).

Python side: `WireCapture` (start/stop or a context manager), `read_flows`, `by_endpoint`, `probe`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import io
import ipaddress
import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534  # tun devices and other raw-IP links: no link header
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20; an optimisation only, the packet type is checked anyway
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
EXIT_UNAVAILABLE = 3

CSV_COLUMNS = ("src", "sport", "dst", "dport", "packets", "ip_bytes", "payload_bytes", "syn", "fin", "rst")
DEFAULT_BUFFER = 64 << 20  # ring (or socket receive buffer) size

_LINK_HEADER = {ARPHRD_ETHER: 14, ARPHRD_LOOPBACK: 14, ARPHRD_NONE: 0}
_IP = struct.Struct("!BxHxxHxB2xII")  # version/IHL, total length, flags/fragment offset, protocol, src, dst
_TCP = struct.Struct("!HH8xBB")  # sport, dport, (seq, ack), data offset, flags
_IPTCP = struct.Struct("!BxHxxHxB2xIIHH8xBB")  # both at once, for an IP header without options
_SNAP = 256  # bytes copied per packet: link (14) + IP (<= 60) + TCP (<= 60) headers fit with room to spare
# The kernel hands a TPACKET_V3 ring over block by block: when a block is full, or _RING_TIMEOUT_MS after it was
# opened. So the ring buffers at least blocks x timeout seconds of a trickle, and size / 256 B packets of a flood.
_RING_BLOCK = 128 << 10
_RING_TIMEOUT_MS = 20
_RING_FRAME = 2048  # required by the API, unused by V3 (packets are packed back to back)
_BLOCK_HDR = struct.Struct("=III")  # tpacket_hdr_v1 at +8: block_status, num_pkts, offset_to_first_pkt
_TP3_TS = struct.Struct("=4xII")  # tpacket3_hdr: tp_sec, tp_nsec (when the packet was captured)
_BLOCK_STATUS = struct.Struct("=I")
# tpacket3_hdr + sockaddr_ll: tp_next_offset, tp_snaplen, tp_len, tp_mac, tp_net, sll_protocol (raw), sll_pkttype
_TP3_HDR = struct.Struct("=I8xII4xHH22xH6xB")
_ETH_P_IP_RAW = socket.htons(ETH_P_IP)  # sll_protocol as read in native byte order
_PR_SET_PDEATHSIG = 1
_ROOT = str(Path(__file__).resolve().parents[2])


class CaptureError(RuntimeError):
    """The capture process failed (or was never started)."""


class CaptureUnavailable(CaptureError):
    """No capture possible here (not root, no AF_PACKET, no such interface...); the message says why."""


@dataclass(frozen=True, slots=True)
class Flow:
    """One direction of one TCP connection, as counted on the wire."""

    src: str
    sport: int
    dst: str
    dport: int
    packets: int = 0
    ip_bytes: int = 0
    payload_bytes: int = 0
    syn: int = 0
    fin: int = 0
    rst: int = 0

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


# ---------------------------------------------------------------------------------------------------------
# Pure helpers


def parse_frame(frame: bytes | bytearray | memoryview, length: int, link: int = 14
                ) -> tuple[int, int, int, int, int, int, int] | None:
    """(src, sport, dst, dport, ip_bytes, payload_bytes, tcp_flags) of an IPv4/TCP frame, addresses as ints.

    `frame` holds the first bytes of the frame (at least the headers), `length` its full length as the kernel
    reported it, `link` the link-layer header length (14 on Ethernet and Linux loopback). None if the frame
    is not IPv4 + TCP, is a non-first fragment, or is too short to hold the headers.
    """
    return _parse_ip(frame, link, min(len(frame), length) - link, length - link)


def _parse_ip(buf: Any, at: int, have: int, size: int) -> tuple[int, int, int, int, int, int, int] | None:
    """parse_frame's work on an IP packet at buf[at:], `have` bytes of it present, `size` its full length."""
    if have < 20:
        return None
    vihl, total, frag, proto, src, dst = _IP.unpack_from(buf, at)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or proto != 6 or ihl < 20 or frag & 0x1FFF or have < ihl + 14:
        return None
    sport, dport, doff, flags = _TCP.unpack_from(buf, at + ihl)
    ip_len = total or size  # GSO (BIG TCP) packets carry total length 0: the frame tells the size
    payload = ip_len - ihl - (doff >> 4) * 4
    return src, sport, dst, dport, ip_len, payload if payload > 0 else 0, flags


def read_flows(path: str | Path) -> list[Flow]:
    """The flows in a capture CSV (as written by the capture process)."""
    with open(path, newline="") as f:
        return [
            Flow(row["src"], int(row["sport"]), row["dst"], int(row["dport"]), int(row["packets"]),
                 int(row["ip_bytes"]), int(row["payload_bytes"]), int(row.get("syn") or 0),
                 int(row.get("fin") or 0), int(row.get("rst") or 0))
            for row in csv.DictReader(f)
        ]


def write_flows(path: str | Path, flows: Iterable[Flow]) -> None:
    """Write flows as CSV, atomically (write a temporary file, then rename)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for f in flows:
        w.writerow((f.src, f.sport, f.dst, f.dport, f.packets, f.ip_bytes, f.payload_bytes, f.syn, f.fin, f.rst))
    _atomic_write(Path(path), buf.getvalue())


def stats_path(out: str | Path) -> Path:
    """Where the JSON sidecar of capture CSV `out` goes: FILE.csv -> FILE.stats.json."""
    out = Path(out)
    return out.with_name(out.stem + ".stats.json") if out.suffix else out.with_name(out.name + ".stats.json")


def parse_endpoint(endpoint: str | tuple[str, int | None]) -> tuple[str, int | None]:
    """'ip:port' -> (ip, port); 'ip' or 'ip:*' -> (ip, None), meaning any port."""
    if isinstance(endpoint, tuple):
        host, port = endpoint
    else:
        host, sep, port_s = endpoint.rpartition(":")
        if not sep:
            host, port_s = endpoint, "*"
        port = None if port_s in ("", "*") else int(port_s)
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"bad port in endpoint {endpoint!r}")
    return str(ipaddress.IPv4Address(host)), port


def by_endpoint(flows: Iterable[Flow], endpoints: Mapping[str, str],
                clients: Mapping[str, str] | None = None) -> dict[str, dict[str, int]]:
    """Sum flows per named endpoint ('ip:port', or 'ip' for any port of that address).

    For each name: "to" / "ip_to" / "packets_to" = payload bytes / IP bytes / packets sent towards the
    endpoint, "from" / "ip_from" / "packets_from" = the same sent by it, "flows" = how many flows touched it.
    Every name is present, with zeros if nothing touched it. `clients` (name -> ip) keeps, for that name,
    only the flows whose other end is that address: two links to one service (no proxy in front of each)
    are told apart by who dials.
    """
    wanted = {name: parse_endpoint(ep) for name, ep in endpoints.items()}
    peer = dict(clients or {})
    out = {name: {"to": 0, "from": 0, "ip_to": 0, "ip_from": 0, "packets_to": 0, "packets_from": 0, "flows": 0}
           for name in wanted}
    for f in flows:
        for name, (ip, port) in wanted.items():
            touched = False
            acc = out[name]
            client = peer.get(name)
            if client is not None and client not in (f.src, f.dst):
                continue
            if f.dst == ip and (port is None or f.dport == port):
                acc["to"] += f.payload_bytes
                acc["ip_to"] += f.ip_bytes
                acc["packets_to"] += f.packets
                touched = True
            if f.src == ip and (port is None or f.sport == port):
                acc["from"] += f.payload_bytes
                acc["ip_from"] += f.ip_bytes
                acc["packets_from"] += f.packets
                touched = True
            acc["flows"] += touched
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# The socket


def _bpf(link: int, net: ipaddress.IPv4Network, skip_outgoing: bool, snap: int = 0xFFFFFFFF
         ) -> list[tuple[int, int, int, int]]:
    """A classic BPF program keeping IPv4/TCP packets to or from `net` (and, if asked, not outgoing ones).

    It keeps the first `snap` bytes of a packet it accepts (the kernel still reports the full length).
    """
    ld_anc, ld_w, ld_b, and_k, jeq, ret = 0x20, 0x20, 0x30, 0x54, 0x15, 0x06
    anc = 0xFFFFF000  # SKF_AD_OFF: ancillary loads (+0: skb->protocol, +4: skb->pkt_type)
    mask, addr = int(net.netmask), int(net.network_address)
    body: list[tuple[int, str | int, str | int, int]] = [(ld_anc, 0, 0, anc + 0), (jeq, 0, "drop", ETH_P_IP)]
    if skip_outgoing:
        body += [(ld_anc, 0, 0, anc + 4), (jeq, "drop", 0, PACKET_OUTGOING)]
    body += [
        (ld_b, 0, 0, link + 9), (jeq, 0, "drop", 6),  # TCP
        (ld_w, 0, 0, link + 12), (and_k, 0, 0, mask), (jeq, "keep", 0, addr),  # source in net
        (ld_w, 0, 0, link + 16), (and_k, 0, 0, mask), (jeq, "keep", "drop", addr),  # destination in net
    ]
    labels = {"keep": len(body), "drop": len(body) + 1}
    body += [(ret, 0, 0, snap), (ret, 0, 0, 0)]

    def jump(at: int, target: str | int) -> int:
        return labels[target] - at - 1 if isinstance(target, str) else target

    return [(code, jump(i, jt), jump(i, jf), k) for i, (code, jt, jf, k) in enumerate(body)]


def _attach_bpf(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    insns = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in prog))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", len(prog), ctypes.addressof(insns)))


@dataclass
class _Tap:
    """An open AF_PACKET socket, its RX ring (None when packets are read with recvfrom) and facts about it."""

    sock: socket.socket
    ring: mmap.mmap | None
    info: dict[str, Any]

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
        self.sock.close()


def _setup_ring(sock: socket.socket, size: int) -> mmap.mmap:
    """A TPACKET_V3 RX ring of about `size` bytes: the kernel writes packets into shared memory blocks."""
    blocks = max(4, size // _RING_BLOCK)
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
        "7I", _RING_BLOCK, blocks, _RING_FRAME, _RING_BLOCK // _RING_FRAME * blocks, _RING_TIMEOUT_MS, 0, 0))
    try:
        return mmap.mmap(sock.fileno(), _RING_BLOCK * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError):  # take the ring down again, or a recvfrom fallback would never see a packet
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, bytes(28))
        raise


def _open(iface: str = "lo", net: str | ipaddress.IPv4Network = "0.0.0.0/0", *, mode: str = "auto",
          buffer: int = DEFAULT_BUFFER, outgoing: bool | None = None, kernel_filter: bool = True,
          listen: bool = True) -> _Tap:
    """Open a non-blocking AF_PACKET raw socket on `iface`; raises CaptureUnavailable.

    mode: "ring" (a TPACKET_V3 ring of `buffer` bytes), "recv" (recvfrom with a `buffer`-byte SO_RCVBUF) or
    "auto" (ring, else recv). `outgoing`: count PACKET_OUTGOING copies too (default: not on loopback, where
    each packet passes twice). kernel_filter=False leaves out the BPF filter and PACKET_IGNORE_OUTGOING (both
    only save work: every packet is checked in user space anyway). With listen=False the socket is bound
    without a protocol, so it receives nothing (used by `probe`).
    """
    if mode not in ("auto", "ring", "recv"):
        raise ValueError(f"mode must be auto, ring or recv, not {mode!r}")
    if not hasattr(socket, "AF_PACKET"):
        raise CaptureUnavailable(f"AF_PACKET sockets are Linux-only (this is {sys.platform})")
    net = ipaddress.IPv4Network(net, strict=False)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing arrives until bound
    except PermissionError as e:
        raise CaptureUnavailable(f"cannot open an AF_PACKET raw socket: {e.strerror} (needs root or CAP_NET_RAW)"
                                 ) from e
    except OSError as e:
        raise CaptureUnavailable(f"cannot open an AF_PACKET raw socket: {e.strerror or e}") from e
    ring = None
    try:
        try:
            sock.bind((iface, 0))
        except OSError as e:
            raise CaptureUnavailable(f"cannot capture on interface {iface!r}: {e.strerror or e}") from e
        hatype = sock.getsockname()[3]
        if hatype not in _LINK_HEADER:
            raise CaptureUnavailable(f"cannot capture on interface {iface!r}: link type {hatype} not supported")
        link = _LINK_HEADER[hatype]
        skip_outgoing = hatype == ARPHRD_LOOPBACK if outgoing is None else not outgoing
        info: dict[str, Any] = {"iface": iface, "net": str(net), "hatype": hatype, "link_header": link,
                                "skip_outgoing": skip_outgoing}
        if not listen:
            return _Tap(sock, None, info)
        if mode != "recv":
            try:
                ring = _setup_ring(sock, buffer)
                info.update(mode="ring", ring_bytes=len(ring))
            except (OSError, ValueError) as e:
                if mode == "ring":
                    raise CaptureUnavailable(f"cannot set up a TPACKET_V3 ring on {iface!r}: {e}") from e
                info["ring_error"] = str(e)
        if ring is None:
            info["mode"] = "recv"
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            info["rcvbuf"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        info["bpf_filter"] = info["ignore_outgoing"] = False
        if kernel_filter:
            try:  # a ring can be cut to the headers, recvfrom needs the whole length (MSG_TRUNC reports the cut)
                _attach_bpf(sock, _bpf(link, net, skip_outgoing, _SNAP if ring is not None else 0xFFFFFFFF))
                info["bpf_filter"] = True
            except OSError as e:
                info["bpf_filter"] = f"not attached: {e.strerror or e}"
        if skip_outgoing and kernel_filter:
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                info["ignore_outgoing"] = True
        try:
            sock.bind((iface, ETH_P_ALL))
        except OSError as e:
            raise CaptureUnavailable(f"cannot capture on interface {iface!r}: {e.strerror or e}") from e
        sock.setblocking(False)
    except BaseException:
        if ring is not None:
            ring.close()
        sock.close()
        raise
    return _Tap(sock, ring, info)


def probe(iface: str = "lo") -> tuple[bool, str]:
    """Can a capture be opened on `iface` here? (ok, reason); cheap, in-process, receives no traffic."""
    try:
        tap = _open(iface, listen=False)
    except CaptureUnavailable as e:
        return False, str(e)
    tap.close()
    return True, f"AF_PACKET capture available on {iface!r} (link type {tap.info['hatype']})"


# ---------------------------------------------------------------------------------------------------------
# The capture process


class _Capture:
    """The counting loop: drain the socket, count, rewrite the CSV every interval, stop on a signal."""

    def __init__(self, iface: str, net: str, **options: Any) -> None:
        self.net = ipaddress.IPv4Network(net, strict=False)
        self._mask, self._addr = int(self.net.netmask), int(self.net.network_address)
        self.tap = _open(iface, self.net, **options)
        self.sock, self.info = self.tap.sock, self.tap.info
        self.flows: dict[tuple[int, int, int, int], list[int]] = {}
        self.buf = bytearray(_SNAP)
        self.block = 0  # the ring block to look at next
        self.seen = self.counted = self.skipped_outgoing = self.skipped_other = 0
        self.kernel_packets = self.kernel_drops = self.kernel_freezes = 0
        self.stop_reason: str | None = None
        self.started = time.time()
        self.lag = 0.0  # ring only: the longest a packet waited in the ring before it was counted, seconds
        self.drain = self._drain_ring if self.tap.ring is not None else self._drain_recv

    def _count(self, p: tuple[int, int, int, int, int, int, int] | None) -> None:
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

    def _drain_recv(self, limit: int = 4096) -> bool:
        """recvfrom up to `limit` queued packets and count them; True if there may be more."""
        recv, buf, count, trunc = self.sock.recvfrom_into, self.buf, self._count, socket.MSG_TRUNC
        link, skip_outgoing = self.info["link_header"], self.info["skip_outgoing"]
        seen = outgoing = 0
        try:
            for _ in range(limit):
                n, sa = recv(buf, 0, trunc)  # MSG_TRUNC: n is the frame's full length, only _SNAP bytes copied
                seen += 1
                if skip_outgoing and sa[2] == PACKET_OUTGOING:
                    outgoing += 1
                    continue
                count(_parse_ip(buf, link, min(n, _SNAP) - link, n - link) if sa[1] == ETH_P_IP else None)
            return True
        except BlockingIOError:
            return False
        finally:
            self.seen += seen
            self.skipped_outgoing += outgoing

    def _drain_ring(self, limit: int = 64) -> bool:
        """Count the packets of up to `limit` ring blocks the kernel has handed over; True if there may be more.

        The hot loop: a plain IPv4 header (no options) + TCP is parsed and counted inline (one struct call);
        anything else goes through `_parse_ip` and `_count`, which give the same answer, only slower.
        """
        ring, count, header, parse = self.tap.ring, self._count, _TP3_HDR.unpack_from, _parse_ip
        assert ring is not None
        iptcp, flows, mask, addr = _IPTCP.unpack_from, self.flows, self._mask, self._addr
        skip_outgoing = self.info["skip_outgoing"]
        blocks = len(ring) // _RING_BLOCK
        for _ in range(limit):
            base = self.block * _RING_BLOCK
            status, packets, first = _BLOCK_HDR.unpack_from(ring, base + 8)
            if not status & TP_STATUS_USER:
                return False
            at = base + first
            if packets:
                sec, nsec = _TP3_TS.unpack_from(ring, at)
                self.lag = max(self.lag, time.time() - sec - nsec / 1e9)
            outgoing = counted = other = 0
            for _ in range(packets):
                nxt, snaplen, length, mac, net, proto, pkttype = header(ring, at)
                if skip_outgoing and pkttype == PACKET_OUTGOING:
                    outgoing += 1
                elif proto != _ETH_P_IP_RAW:
                    other += 1
                else:
                    link = net - mac
                    vihl, total, frag, ipproto, src, dst, sport, dport, doff, flags = iptcp(ring, at + net)
                    if vihl != 0x45 or ipproto != 6 or frag & 0x1FFF or snaplen - link < 34:
                        count(parse(ring, at + net, snaplen - link, length - link))
                    elif src & mask != addr and dst & mask != addr:
                        other += 1
                    else:
                        ip_len = total or length - link  # GSO (BIG TCP): total length 0, the frame tells
                        key = (src, sport, dst, dport)
                        rec = flows.get(key)
                        if rec is None:
                            rec = flows[key] = [0, 0, 0, 0, 0, 0]
                        rec[0] += 1
                        rec[1] += ip_len
                        payload = ip_len - 20 - (doff >> 4) * 4
                        rec[2] += payload if payload > 0 else 0
                        if flags & 0x07:
                            rec[3] += flags & TCP_SYN and 1
                            rec[4] += flags & TCP_FIN
                            rec[5] += flags & TCP_RST and 1
                        counted += 1
                at += nxt
            self.seen += packets
            self.counted += counted
            self.skipped_outgoing += outgoing
            self.skipped_other += other
            _BLOCK_STATUS.pack_into(ring, base + 8, TP_STATUS_KERNEL)  # hand the block back
            self.block = (self.block + 1) % blocks
        return True

    def drain_all(self, budget: float = 2.0) -> None:
        """Count everything queued now, never taking more than `budget` seconds on a busy link."""
        if self.tap.ring is not None:  # the block being filled is handed over once its timeout expires
            time.sleep(2 * _RING_TIMEOUT_MS / 1000 + 0.005)
        deadline = time.monotonic() + budget
        while self.drain() and time.monotonic() < deadline:
            pass

    def kernel_stats(self) -> None:
        """Fold in the kernel's counters (PACKET_STATISTICS resets them on every read)."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        except OSError:
            return
        packets, drops, freezes = struct.unpack("III", raw.ljust(12, b"\0"))
        self.kernel_packets += packets  # includes the dropped ones
        self.kernel_drops += drops
        self.kernel_freezes += freezes  # ring only: times every block was full

    def snapshot(self) -> list[Flow]:
        ntoa = socket.inet_ntoa
        return [Flow(ntoa(src.to_bytes(4, "big")), sport, ntoa(dst.to_bytes(4, "big")), dport, *rec)
                for (src, sport, dst, dport), rec in sorted(self.flows.items())]

    def write(self, out: Path, stats: Path, *, final: bool = False) -> None:
        self.kernel_stats()
        write_flows(out, self.snapshot())
        cpu = os.times()
        doc = {**self.info, "pid": os.getpid(), "started": self.started, "updated": time.time(), "final": final,
               "stop_reason": self.stop_reason, "kernel_packets": self.kernel_packets,
               "kernel_drops": self.kernel_drops, "kernel_freezes": self.kernel_freezes, "packets_seen": self.seen,
               "packets_counted": self.counted, "skipped_outgoing": self.skipped_outgoing,
               "skipped_other": self.skipped_other, "flows": len(self.flows), "max_lag_seconds": round(self.lag, 4),
               "cpu_seconds": round(cpu.user + cpu.system, 3)}
        _atomic_write(stats, json.dumps(doc, indent=1) + "\n")

    def run(self, out: Path, stats: Path, interval: float, parent: int) -> int:
        """Count until SIGTERM/SIGINT or the parent's death, rewriting `out` and `stats` every `interval` s."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self.stop_reason = self.stop_reason or signal.Signals(signum).name

        def on_parent_death(_signum: int, _frame: FrameType | None) -> None:
            if os.getppid() != parent:  # the kernel reparents us before it sends the death signal
                self.stop_reason = self.stop_reason or "parent died"

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, on_parent_death)
        _arm_parent_death_signal()
        self.write(out, stats)
        print("ready", flush=True)
        next_write = time.monotonic() + interval
        while self.stop_reason is None:
            more = self.drain()
            if os.getppid() != parent:
                self.stop_reason = self.stop_reason or "parent died"
            now = time.monotonic()
            if now >= next_write:
                self.write(out, stats)
                next_write = max(next_write + interval, now + interval / 2)
            if not more and self.stop_reason is None:
                select.select([self.sock, wake_r], [], [], min(max(next_write - now, 0.0), 0.5))
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
        self.drain_all()
        self.write(out, stats, final=True)
        self.tap.close()
        return 0


def _arm_parent_death_signal() -> None:
    """SIGUSR1 when the forking thread dies; the handler only stops us if we really were orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.measure.wire", description=__doc__.splitlines()[0])
    ap.add_argument("--iface", default="lo")
    ap.add_argument("--net", default="0.0.0.0/0", type=lambda s: str(ipaddress.IPv4Network(s, strict=False)),
                    help="count only packets with source or destination in this IPv4 network")
    ap.add_argument("--out", required=True, type=Path, help="per-flow CSV, rewritten atomically")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between CSV rewrites")
    ap.add_argument("--stats", type=Path, help="JSON sidecar (default: FILE.stats.json next to --out)")
    ap.add_argument("--mode", choices=("auto", "ring", "recv"), default="auto",
                    help="TPACKET_V3 ring or plain recvfrom (auto: the ring if the kernel offers it)")
    ap.add_argument("--buffer", type=int, default=DEFAULT_BUFFER, help="ring size or SO_RCVBUF, bytes")
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
        cap = _Capture(args.iface, args.net, mode=args.mode, buffer=args.buffer, outgoing=outgoing,
                       kernel_filter=args.kernel_filter)
    except CaptureUnavailable as e:
        print(f"unavailable: {e}", flush=True)
        print(f"wire capture unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return cap.run(args.out, args.stats or stats_path(args.out), args.interval, args.parent)


# ---------------------------------------------------------------------------------------------------------
# The harness side


class WireCapture:
    """Run the capture process for one network block on one interface.

        with WireCapture("127.12.34.0/24", run_dir / "wire.csv") as cap:
            ...                     # traffic
        flows = cap.flows           # or: cap.start(); ...; flows = cap.stop()

    `start()` raises CaptureUnavailable (with the reason) when no capture can be had here; `stop()` raises
    CaptureError if the capture process failed on the way.
    """

    def __init__(self, net: str, out: str | Path, *, iface: str = "lo", interval: float = 1.0,
                 mode: str = "auto", buffer: int = DEFAULT_BUFFER, kernel_filter: bool = True,
                 ready_timeout: float = 10.0, stop_timeout: float = 5.0, env: Mapping[str, str] | None = None,
                 python: str | None = None) -> None:
        if mode not in ("auto", "ring", "recv"):
            raise ValueError(f"mode must be auto, ring or recv, not {mode!r}")
        self.net = str(ipaddress.IPv4Network(net, strict=False))
        self.out = Path(out)
        self.stats_file = stats_path(self.out)
        self.iface = iface
        self.interval = interval
        self.mode = mode
        self.buffer = buffer
        self.kernel_filter = kernel_filter
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.env = dict(env or {})
        self.python = python or sys.executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.flows: list[Flow] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> WireCapture:
        if self.proc is not None:
            raise CaptureError("capture already started")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for stale in (self.out, self.stats_file):
            stale.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        argv = [self.python, "-m", "harness.measure.wire", "--iface", self.iface, "--net", self.net,
                "--out", str(self.out), "--stats", str(self.stats_file), "--interval", repr(self.interval),
                "--mode", self.mode, "--buffer", str(self.buffer), "--parent", str(os.getpid())]
        if not self.kernel_filter:
            argv.append("--no-kernel-filter")
        self._stderr = tempfile.TemporaryFile(prefix="wire-")  # noqa: SIM115 -- lives as long as the process
        self.flows = None
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self._stderr, env=env)
        except OSError as e:
            self._close()
            raise CaptureUnavailable(f"cannot start the capture process: {e}") from e
        line = self._first_line()
        if line == "ready":
            return self
        proc = self.proc
        if line is None:  # timed out
            proc.kill()
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        err = self._stderr_tail()
        self._close()
        self.proc = None
        if line is None:
            raise CaptureUnavailable(f"capture process not ready after {self.ready_timeout:g}s")
        if line.startswith("unavailable: "):
            raise CaptureUnavailable(line.removeprefix("unavailable: "))
        raise CaptureUnavailable(f"capture process exited with code {rc} before it was ready: {err or line!r}")

    def _first_line(self) -> str | None:
        """The first stdout line ('' on EOF), or None if none came within ready_timeout."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace").strip()

    def _stderr_tail(self, limit: int = 2000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-limit:]

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def snapshot(self) -> list[Flow]:
        """The flows as of the capture's last periodic write (it need not be stopped)."""
        return read_flows(self.out) if self.out.exists() else []

    def stats(self) -> dict[str, Any]:
        """The JSON sidecar: kernel_packets, kernel_drops, packets_counted, cpu_seconds, ..."""
        return json.loads(self.stats_file.read_text()) if self.stats_file.exists() else {}

    def stop(self) -> list[Flow]:
        """SIGTERM the capture, wait for its final write, and return the flows (also kept as `.flows`)."""
        if self.proc is None:
            if self.flows is not None:
                return self.flows
            raise CaptureError("capture not started")
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        err = self._stderr_tail()
        self._close()
        self.proc = None
        if rc is None:
            raise CaptureError(f"capture process did not exit within {self.stop_timeout:g}s of SIGTERM; killed")
        if rc != 0:
            raise CaptureError(f"capture process exited with code {rc}: {err}")
        if not self.stats().get("final"):
            raise CaptureError("capture process exited without its final write")
        self.flows = read_flows(self.out)
        return self.flows

    def __enter__(self) -> WireCapture:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is None:
            return
        if exc_type is None:
            self.stop()
        else:
            with contextlib.suppress(CaptureError):
                self.stop()


if __name__ == "__main__":
    sys.exit(main())
