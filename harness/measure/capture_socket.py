"""The capture's socket: an AF_PACKET socket on one interface with the run's BPF filter, and what it tells.

The socket is opened as scapy's `L2ListenSocket` opens it (the filter on before the socket is bound, then
drained, so no unfiltered frame waits in it) but without importing scapy's socket and packet layers, which cost
0.5 CPU s at every run's start. The filter is a tcpdump expression (`bpf_expression`) that libpcap, through
scapy's ctypes bindings, compiles into a classic BPF program (`bpf_program`) that the kernel runs, so only the
run's packets reach user space; without libpcap the capture counts without it and the sidecar says so.

`probe` asks, cheaply and in-process, whether a capture can be had here; `open_socket` is what the capture
process (`harness.measure.capture_process`) counts from.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
import struct
import sys
from pathlib import Path
from typing import TypedDict

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

DEFAULT_BUFFER = 64 << 20  # socket receive buffer (the kernel doubles it): what absorbs a burst
_LINK_HEADER = {ARPHRD_ETHER: 14, ARPHRD_LOOPBACK: 14, ARPHRD_NONE: 0}
_DLT = {ARPHRD_ETHER: 1, ARPHRD_LOOPBACK: 1, ARPHRD_NONE: 12}  # libpcap's link type (DLT_EN10MB, DLT_RAW) of each
_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_AUX_LEN = struct.Struct("=4xI")  # struct tpacket_auxdata: tp_status, tp_len (the frame's length before the filter)
# what recvmsg needs room for: PACKET_AUXDATA + SO_TIMESTAMPNS (both turned on by open_socket)
ANCILLARY = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(16)
_SO_TIMESTAMPNS = 35


class CaptureError(ManobenchError):
    """The capture process failed (or was never started)."""


class CaptureUnavailable(CaptureError):
    """No capture possible here (not root, no AF_PACKET, no such interface...); the message says why."""


class FilterError(ManobenchError):
    """libpcap could not compile (or is missing for) the capture's filter: the capture counts without it."""


def bpf_expression(net: str | ipaddress.IPv4Network, inbound: bool) -> str:
    """The tcpdump filter the kernel runs: IPv4/TCP to or from `net`, and (loopback) only the arriving copy."""
    return ("inbound and " if inbound else "") + f"ip and tcp and net {ipaddress.IPv4Network(net, strict=False)}"


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


class SocketInfo(TypedDict, total=False):
    """What the capture's socket is (the sidecar's first keys): where it listens, how frames start, whether
    the kernel filters them; `reader` is added by the capture process."""

    iface: str
    net: str
    hatype: int  # ARPHRD_*: the interface's link type
    link_header: int  # bytes before the IP header
    skip_outgoing: bool
    scapy: str  # scapy's version
    bpf_filter: str | bool  # the expression attached, "not attached: why", or False (kernel_filter=False)
    rcvbuf: int  # the socket's receive buffer as the kernel set it, bytes
    ignore_outgoing: bool  # PACKET_IGNORE_OUTGOING attached
    reader: str


def open_socket(iface: str, net: ipaddress.IPv4Network, *, buffer: int = DEFAULT_BUFFER,
                outgoing: bool | None = None, kernel_filter: bool = True) -> tuple[socket.socket, SocketInfo]:
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
    info: SocketInfo = {"iface": iface, "net": str(net), "hatype": hatype, "link_header": _LINK_HEADER[hatype],
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


def frame_length(n: int, ancdata: list[tuple[int, int, bytes]]) -> int:
    """The frame's length before the BPF filter cut it (PACKET_AUXDATA's tp_len), else `n`."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX_LEN.size:
            return int(_AUX_LEN.unpack_from(data)[0])
    return n


def kernel_stamp(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel took the packet (SO_TIMESTAMPNS), as time.time()."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) == 16:
            sec, nsec = struct.unpack("qq", data)
            return sec + nsec / 1e9
    return None
