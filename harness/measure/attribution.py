"""Which flows are whose: the wire's flows summed per named endpoint (a link's proxy address, a service's port).

`harness.measure.summary` puts the wire's bytes beside each link's in links.csv with `by_endpoint`, and
`harness.measure.tcpdump` attributes an independent capture the same way, so the two are compared by one rule.
Pure: flows in, sums out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from harness.history.flows import Flow


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
