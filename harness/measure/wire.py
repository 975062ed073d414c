"""wire: bytes counted on the wire per TCP 4-tuple, sniffed with scapy behind a kernel BPF filter.

The services count their own bytes; this counts what the kernel actually carried, to cross-check those counts
and to attribute traffic to links (a proxy's listen address) and planes (a service's op/heartbeat/state port).

The capture runs as its own process, so the harness's GIL never slows it down and it never slows the harness:

    python -m harness.measure.wire --iface lo --net 127.A.B.0/24 --out FILE.csv [--interval 1.0] [--reader raw]

It prints one line, ``ready``, once its socket is bound (or ``unavailable: <reason>`` and exits 3), rewrites
FILE.csv atomically every ``interval`` seconds and once more on SIGTERM/SIGINT (then exits 0), and keeps a JSON
sidecar (``stats_path(FILE.csv)``, i.e. FILE.stats.json: kernel_packets, kernel_drops, packets_counted,
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

How: an AF_PACKET socket (as scapy's `L2ListenSocket` opens it) with a tcpdump expression that libpcap,
through scapy's ctypes bindings, compiles into a classic BPF program in the kernel, so only the run's packets
reach user space (scapy's socket layer itself is not imported: 0.5 CPU s at every run's start). Two readers:
  * ``raw`` (the default): the first 256 bytes of each frame of the socket (the kernel reports the full
    length) and the fixed IPv4/TCP header fields unpacked with struct: about 3.4 us of CPU a packet.
  * ``layers``: each frame dissected by scapy (Ether / IP / TCP), the fields read from the layers: about
    170-210 us a packet, at most ~5,500 packets/s without drops, below the peaks of the Fig 8 spec and of a
    100 workflows/s run (benchmarks/bench_wire.py, docs/measure.md); the reference the raw reader is tested
    against.
Kernel drops (PACKET_STATISTICS) are in the sidecar and in `WireCapture.health()`; they are never hidden.

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
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from harness.errors import ManobenchError

ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534  # tun devices and other raw-IP links: no link header
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20; an optimisation only, the packet type is checked anyway
PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC = 1, 1
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
EXIT_UNAVAILABLE = 3
READERS = ("raw", "layers")

CSV_COLUMNS = ("src", "sport", "dst", "dport", "packets", "ip_bytes", "payload_bytes", "syn", "fin", "rst")
DEFAULT_BUFFER = 64 << 20  # socket receive buffer (the kernel doubles it): what absorbs a burst
# Sparse traffic (the last drain found fewer than SPARSE packets) is read in batches BATCH_WAIT apart rather than
# a wake-up per packet: a run's 300-3,000 packets/s then cost ~1% of a core instead of 10-17% (the wake-up,
# select and the failing read of an emptied socket, ~40 us, were most of it); dense traffic is read at once.
SPARSE, BATCH_WAIT = 256, 0.02

_LINK_HEADER = {ARPHRD_ETHER: 14, ARPHRD_LOOPBACK: 14, ARPHRD_NONE: 0}
_DLT = {ARPHRD_ETHER: 1, ARPHRD_LOOPBACK: 1, ARPHRD_NONE: 12}  # libpcap's link type (DLT_EN10MB, DLT_RAW) of each
_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_IP = struct.Struct("!BxHxxHxB2xII")  # version/IHL, total length, flags/fragment offset, protocol, src, dst
_TCP = struct.Struct("!HH8xBB")  # sport, dport, (seq, ack), data offset, flags
_AUX_LEN = struct.Struct("=4xI")  # struct tpacket_auxdata: tp_status, tp_len (the frame's length before the filter)
_SNAP = 256  # bytes copied per packet: link (14) + IP (<= 60) + TCP (<= 60) headers fit with room to spare
_ANC = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(16)  # PACKET_AUXDATA + SO_TIMESTAMPNS (both turned on)
_SO_TIMESTAMPNS = 35
_ROOT = str(Path(__file__).resolve().parents[2])

Parsed = tuple[int, int, int, int, int, int, int]  # src, sport, dst, dport, ip_bytes, payload_bytes, tcp flags


class CaptureError(ManobenchError):
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


def parse_frame(frame: bytes | bytearray | memoryview, length: int, link: int = 14) -> Parsed | None:
    """(src, sport, dst, dport, ip_bytes, payload_bytes, tcp_flags) of an IPv4/TCP frame, addresses as ints.

    `frame` holds the first bytes of the frame (at least the headers), `length` its full length as the kernel
    reported it, `link` the link-layer header length (14 on Ethernet and Linux loopback). None if the frame
    is not IPv4 + TCP, is a non-first fragment, or is too short to hold the headers. The raw reader's parser.
    """
    return _parse_ip(frame, link, min(len(frame), length) - link, length - link)


def parse_frame_layers(frame: bytes | bytearray | memoryview, length: int, link: int = 14) -> Parsed | None:
    """What `parse_frame` returns, read from scapy's dissection (Ether or, for link=0, IP): the layers reader."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkt = Ether(bytes(frame)) if link else IP(bytes(frame))
    ip, tcp = pkt.getlayer(IP), pkt.getlayer(TCP)
    if ip is None or tcp is None or ip.version != 4 or ip.frag or len(frame) < link + ip.ihl * 4 + 14:
        return None  # (scapy leaves a non-first fragment's payload undissected: no TCP layer)
    ip_len = ip.len or length - link
    payload = ip_len - ip.ihl * 4 - tcp.dataofs * 4
    return (int(ipaddress.IPv4Address(ip.src)), tcp.sport, int(ipaddress.IPv4Address(ip.dst)), tcp.dport,
            ip_len, max(payload, 0), int(tcp.flags))


def _parse_ip(buf: Any, at: int, have: int, size: int) -> Parsed | None:
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


def bpf_expression(net: str | ipaddress.IPv4Network, inbound: bool) -> str:
    """The tcpdump filter the kernel runs: IPv4/TCP to or from `net`, and (loopback) only the arriving copy."""
    return ("inbound and " if inbound else "") + f"ip and tcp and net {ipaddress.IPv4Network(net, strict=False)}"


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


def _check_iface(iface: str) -> None:
    """CaptureUnavailable unless AF_PACKET sockets exist here, we may open one, and `iface` exists."""
    if not hasattr(socket, "AF_PACKET"):
        raise CaptureUnavailable(f"AF_PACKET sockets are Linux-only (this is {sys.platform})")
    try:
        socket.if_nametoindex(iface)
    except OSError as e:
        raise CaptureUnavailable(f"cannot capture on interface {iface!r}: no such interface") from e
    try:  # protocol 0: nothing arrives, this only asks whether we may
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError as e:
        raise CaptureUnavailable(f"cannot open an AF_PACKET raw socket: {e.strerror} (needs root or CAP_NET_RAW)"
                                 ) from e
    except OSError as e:
        raise CaptureUnavailable(f"cannot open an AF_PACKET raw socket: {e.strerror or e}") from e


def _hatype(iface: str) -> int:
    """The interface's ARPHRD link type, from sysfs (as scapy's own interface list reads it)."""
    try:
        return int(Path(f"/sys/class/net/{iface}/type").read_text())
    except (OSError, ValueError) as e:
        raise CaptureUnavailable(f"cannot capture on interface {iface!r}: no link type ({e})") from e


class FilterError(ManobenchError):
    """libpcap could not compile (or is missing for) the capture's filter: the capture counts without it."""


def bpf_program(expr: str, hatype: int) -> bytes:
    """The classic BPF program libpcap compiles `expr` into for link type `hatype`, as the instructions the
    kernel takes (struct sock_filter: code, jt, jf, k).

    Through scapy's ctypes bindings of libpcap alone (scapy.libs.winpcapy): about 0.05 CPU s to import, where
    scapy's socket layer (scapy.arch.linux, and the packet layers it loads) cost 0.5 CPU s in every run's
    capture start; the program is the one scapy's `compile_filter` makes (tests/test_wire.py checks)."""
    try:
        from scapy.libs import winpcapy as pcap
    except (ImportError, OSError) as e:
        raise FilterError(f"libpcap is not available: {e}") from e
    handle = pcap.pcap_open_dead(_DLT[hatype], 65535)
    program = pcap.bpf_program()
    try:
        if pcap.pcap_compile(handle, ctypes.byref(program), expr.encode(), 1, 0xFFFFFFFF) == -1:
            raise FilterError(f"libpcap cannot compile {expr!r}: {bytes(pcap.pcap_geterr(handle) or b'').decode()}")
        insns = program.bf_insns
        code = b"".join(_SOCK_FILTER.pack(insns[i].code, insns[i].jt, insns[i].jf, insns[i].k & 0xFFFFFFFF)
                        for i in range(program.bf_len))
        pcap.pcap_freecode(ctypes.byref(program))
        return code
    finally:
        pcap.pcap_close(handle)


def _attach(sock: socket.socket, code: bytes) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program (struct sock_fprog: its length, a pointer to it)."""
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(code) // _SOCK_FILTER.size, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _listen(iface: str, code: bytes | None, promisc: bool) -> socket.socket:
    """An AF_PACKET socket on `iface` that receives every frame passing it, through `code` if given; bound
    only once the filter is on (with a zero buffer until then, and drained), so no unfiltered frame waits in it.
    What scapy's L2ListenSocket does, without importing scapy's packet layers."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
        if code is not None:
            _attach(sock, code)
        if promisc:
            mreq = struct.pack("IHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.bind((iface, ETH_P_ALL))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _open(iface: str, net: ipaddress.IPv4Network, *, buffer: int = DEFAULT_BUFFER, outgoing: bool | None = None,
          kernel_filter: bool = True) -> tuple[socket.socket, dict[str, Any]]:
    """An AF_PACKET socket on `iface` with the run's BPF filter, non-blocking; raises CaptureUnavailable.

    `outgoing`: count PACKET_OUTGOING copies too (default: not on loopback, where each packet passes twice).
    kernel_filter=False leaves out the BPF filter and PACKET_IGNORE_OUTGOING (both only save work: every
    packet is checked in user space anyway); where libpcap cannot compile the filter the capture goes on
    without it and the sidecar says so.
    """
    _check_iface(iface)
    hatype = _hatype(iface)
    if hatype not in _LINK_HEADER:
        raise CaptureUnavailable(f"cannot capture on interface {iface!r}: link type {hatype} not supported")
    skip_outgoing = hatype == ARPHRD_LOOPBACK if outgoing is None else not outgoing
    expr = bpf_expression(net, skip_outgoing)
    info: dict[str, Any] = {"iface": iface, "net": str(net), "hatype": hatype, "link_header": _LINK_HEADER[hatype],
                            "skip_outgoing": skip_outgoing, "scapy": _scapy_version(), "bpf_filter": False}
    promisc = hatype != ARPHRD_LOOPBACK  # a bridge: also the frames switched between two of its ports
    code = None
    if kernel_filter:
        try:
            code = bpf_program(expr, hatype)
            info["bpf_filter"] = expr
        except FilterError as e:  # count in user space only
            info["bpf_filter"] = f"not attached: {e}"
    try:
        raw = _listen(iface, code, promisc)
    except PermissionError as e:
        raise CaptureUnavailable(f"cannot open an AF_PACKET raw socket: {e.strerror} (needs root or CAP_NET_RAW)"
                                 ) from e
    except (OSError, ValueError) as e:
        raise CaptureUnavailable(f"cannot capture on interface {iface!r}: {getattr(e, 'strerror', None) or e}"
                                 ) from e
    try:
        raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer)
    except OSError:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    info["rcvbuf"] = raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    info["ignore_outgoing"] = False
    if skip_outgoing and kernel_filter:
        with contextlib.suppress(OSError):
            raw.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            info["ignore_outgoing"] = True
    with contextlib.suppress(OSError):  # the frame's original length comes with it
        raw.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    return raw, info


def _scapy_version() -> str:
    """scapy's version (its libpcap bindings compile the filter; its layers are the `layers` reader)."""
    import scapy

    return str(scapy.VERSION)


def probe(iface: str = "lo") -> tuple[bool, str]:
    """Can a capture be opened on `iface` here? (ok, reason); cheap, in-process, receives no traffic."""
    try:
        _check_iface(iface)
        hatype = _hatype(iface)
    except CaptureUnavailable as e:
        return False, str(e)
    return True, f"AF_PACKET capture available on {iface!r} (link type {hatype})"


def _frame_length(n: int, ancdata: list[tuple[int, int, bytes]]) -> int:
    """The frame's length before the BPF filter cut it (PACKET_AUXDATA's tp_len), else `n`."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX_LEN.size:
            return int(_AUX_LEN.unpack_from(data)[0])
    return n


def _stamp(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel took the packet (SO_TIMESTAMPNS), as time.time()."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) == 16:
            sec, nsec = struct.unpack("qq", data)
            return sec + nsec / 1e9
    return None


# ---------------------------------------------------------------------------------------------------------
# The capture process


class _Capture:
    """The counting loop: drain the socket, count, rewrite the CSV every interval, stop on a signal."""

    def __init__(self, iface: str, net: str, reader: str = "raw", **options: Any) -> None:
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, not {reader!r}")
        self.net = ipaddress.IPv4Network(net, strict=False)
        self._mask, self._addr = int(self.net.netmask), int(self.net.network_address)
        self.sock, self.info = _open(iface, self.net, **options)
        self.info["reader"] = reader
        self.link: int = self.info["link_header"]
        self.skip_outgoing: bool = self.info["skip_outgoing"]
        self.flows: dict[tuple[int, int, int, int], list[int]] = {}
        self.buf = bytearray(_SNAP)
        self.seen = self.counted = self.skipped_outgoing = self.skipped_other = 0
        self.kernel_packets = self.kernel_drops = 0
        self.kernel_stats()  # the counters run from the socket's creation: start them at ready
        self.kernel_packets = self.kernel_drops = 0
        self.stop_reason: str | None = None
        self.started = time.time()
        self.lag = 0.0  # the longest a packet waited in the socket before it was counted, seconds
        self.peak = 0.0  # the highest packets/s over one write interval
        self._last = (time.monotonic(), 0)
        self.parse: Callable[[Any, int, int], Parsed | None] = parse_frame if reader == "raw" else parse_frame_layers

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
        stamp = _stamp(ancdata)
        if stamp is not None:
            self.lag = max(self.lag, time.time() - stamp)

    def _drain(self, limit: int = 4096) -> bool:
        """Read up to `limit` queued packets and count them; True if there may be more.

        Only the first _SNAP bytes of a frame are copied (MSG_TRUNC: the kernel still reports its length).
        """
        recv, bufs, view, link, parse = self.sock.recvmsg_into, [self.buf], memoryview(self.buf), self.link, self.parse
        try:
            for i in range(limit):
                n, ancdata, _flags, sa = recv(bufs, _ANC, socket.MSG_TRUNC)
                self.seen += 1
                if not i:
                    self._lagged(ancdata)
                if self.skip_outgoing and sa[2] == PACKET_OUTGOING:
                    self.skipped_outgoing += 1
                    continue
                self._count(parse(view[:min(n, _SNAP)], _frame_length(n, ancdata), link) if sa[1] == ETH_P_IP
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
        _atomic_write(stats, json.dumps(doc, indent=1) + "\n")

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
    ap = argparse.ArgumentParser(prog="python -m harness.measure.wire", description=__doc__.splitlines()[0])
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
        cap = _Capture(args.iface, args.net, args.reader, buffer=args.buffer, outgoing=outgoing,
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
    CaptureError if the capture process failed on the way. `note` says what captures (for the run's record),
    `health()` whether it saw everything (kernel drops, never hidden).
    """

    def __init__(self, net: str, out: str | Path, *, iface: str = "lo", interval: float = 1.0,
                 reader: str = "raw", buffer: int = DEFAULT_BUFFER, kernel_filter: bool = True,
                 ready_timeout: float = 10.0, stop_timeout: float = 5.0, env: Mapping[str, str] | None = None,
                 python: str | None = None) -> None:
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, not {reader!r}")
        self.net = str(ipaddress.IPv4Network(net, strict=False))
        self.out = Path(out)
        self.stats_file = stats_path(self.out)
        self.iface = iface
        self.interval = interval
        self.reader = reader
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
    def note(self) -> str:
        """One line for the run's record (config.yaml's wire_capture): what counts the packets, and how."""
        where = "lo" if self.iface == "lo" else f"the run's bridge {self.iface} (promiscuous)"
        bpf = f"kernel BPF '{bpf_expression(self.net, self.iface == 'lo')}'" if self.kernel_filter else "no BPF"
        how = ("fixed IPv4/TCP headers read from the raw frames" if self.reader == "raw"
               else "scapy's Ether/IP/TCP dissection")
        return f"AF_PACKET socket on {where}, {bpf} (compiled by libpcap), {how}"

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
                "--reader", self.reader, "--buffer", str(self.buffer), "--parent", str(os.getpid())]
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
        """The JSON sidecar: kernel_packets, kernel_drops, packets_counted, peak_packets_per_second, ..."""
        return json.loads(self.stats_file.read_text()) if self.stats_file.exists() else {}

    def health(self) -> str:
        """One line on whether the capture saw every packet: 'complete: ...' or 'INCOMPLETE: ...' (drops)."""
        s = self.stats()
        if not s:
            return "no capture statistics"
        packets, drops = s.get("kernel_packets", 0), s.get("kernel_drops", 0)
        rates = (f"peak {s.get('peak_packets_per_second', 0):,} packets/s, longest wait in the socket "
                 f"{s.get('max_lag_seconds', 0) * 1000:.0f} ms, reader {s.get('reader')}")
        if drops:
            return (f"INCOMPLETE: the kernel dropped {drops:,} of {packets:,} packets (the {s.get('reader')} "
                    f"reader did not keep up; wire bytes are short); {rates}")
        return f"complete: {packets:,} packets, 0 kernel drops; {rates}"

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
