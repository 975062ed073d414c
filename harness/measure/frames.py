"""A frame's IPv4/TCP fields, as the capture's two readers take them (docs/measure.md, "Which reader").

  * `parse_frame`, the ``raw`` reader (the default): the fixed IPv4/TCP header fields unpacked with struct from
    the first bytes of the frame, about 3.4 us of CPU a packet;
  * `parse_frame_layers`, the ``layers`` reader: scapy's dissection (Ether / IP / TCP), about 170-210 us a
    packet; the reference the raw reader is tested against (both must give the same tuple for every frame).

Pure: bytes in, a tuple out; the capture process (`harness.measure.capture_process`) counts what they return.
"""

from __future__ import annotations

import ipaddress
import struct

TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
READERS = ("raw", "layers")

_IP = struct.Struct("!BxHxxHxB2xII")  # version/IHL, total length, flags/fragment offset, protocol, src, dst
_TCP = struct.Struct("!HH8xBB")  # sport, dport, (seq, ack), data offset, flags

Parsed = tuple[int, int, int, int, int, int, int]  # src, sport, dst, dport, ip_bytes, payload_bytes, tcp flags
Frame = bytes | bytearray | memoryview  # the first bytes of a frame, as the capture's socket filled them


def parse_frame(frame: Frame, length: int, link: int = 14) -> Parsed | None:
    """(src, sport, dst, dport, ip_bytes, payload_bytes, tcp_flags) of an IPv4/TCP frame, addresses as ints.

    `frame` holds the first bytes of the frame (at least the headers), `length` its full length as the kernel
    reported it, `link` the link-layer header length (14 on Ethernet and Linux loopback). None if the frame
    is not IPv4 + TCP, is a non-first fragment, or is too short to hold the headers. The raw reader's parser.
    """
    return _parse_ip(frame, link, min(len(frame), length) - link, length - link)


def parse_frame_layers(frame: Frame, length: int, link: int = 14) -> Parsed | None:
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


def _parse_ip(buf: Frame, at: int, have: int, size: int) -> Parsed | None:
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
