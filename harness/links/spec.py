"""The link spec file shared by the launcher (writes it) and proxyd (reads it): a JSON list of links.

Addresses are checked here, once, because the proxies must never send traffic anywhere else: loopback, or an
address inside a bridge network that this run created (the docker runtime's private network: the proxies
listen on its gateway, the host's side of the bridge, and dial the containers on it). Such networks are named
in $MANOBENCH_BRIDGE_NETS (comma-separated CIDRs, set by the docker runtime for the processes it starts) and
must be private (RFC 1918) ranges.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.links.proxy import check_delay

PLANE_NAME = re.compile(r"[a-z][a-z0-9_]{0,15}", re.ASCII)  # our planes (op, hb, state) or a target file's
_KEYS = {"name", "listen", "target", "delay_fwd", "delay_rev", "jitter", "plane", "seed"}


def parse_hostport(text: str, what: str = "address") -> tuple[str, int]:
    """'127.0.0.2:8080' or '[::1]:8080' -> (host, port), rejecting anything that is not loopback."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"{what} must be 'host:port', got {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{what} has a bad port: {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} port out of range: {text!r}")
    check_loopback(host, what)
    return host, port


BRIDGE_NETS_ENV = "MANOBENCH_BRIDGE_NETS"


def run_bridge_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The private networks of bridges this run created ($MANOBENCH_BRIDGE_NETS); public ranges are ignored."""
    nets = []
    for item in os.environ.get(BRIDGE_NETS_ENV, "").split(","):
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            continue
        if net.is_private and not net.is_loopback and net.prefixlen >= 16:
            nets.append(net)
    return nets


def check_loopback(host: str, what: str = "address") -> None:
    """IP literals only: 'localhost' can resolve to two addresses, and a port-0 listen to two ports.

    Loopback, or inside a bridge network of this run (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} host must be a loopback IP (127.x.y.z or ::1), got {host!r}") from None
    if ip.is_loopback or any(ip in net for net in run_bridge_networks()):
        return
    raise ValueError(f"{what} host must be loopback (127.x.y.z or ::1) or in a bridge network of this run, "
                     f"got {host!r}")


def format_hostport(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class LinkSpec:
    name: str
    listen: tuple[str, int]
    target: tuple[str, int]
    delay_fwd: float = 0.0
    delay_rev: float = 0.0
    jitter: float = 0.0
    plane: str = "op"
    seed: int | None = None

    @classmethod
    def from_dict(cls, raw: object) -> LinkSpec:
        if not isinstance(raw, dict):
            raise ValueError(f"each link must be a JSON object, got {raw!r}")
        unknown = set(raw) - _KEYS
        if unknown:
            raise ValueError(f"link {raw.get('name')!r}: unknown keys {sorted(unknown)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"link name must be a non-empty string without '/', got {name!r}")
        plane = raw.get("plane", "op")
        if not isinstance(plane, str) or not PLANE_NAME.fullmatch(plane):
            raise ValueError(f"link {name!r}: a plane is a name of [a-z0-9_] (op, hb, state, or a target file's), "
                             f"got {plane!r}")
        seed = raw.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"link {name!r}: seed must be an integer, got {seed!r}")
        if "listen" not in raw or "target" not in raw:
            raise ValueError(f"link {name!r}: 'listen' and 'target' are required")
        return cls(
            name=name,
            listen=parse_hostport(raw["listen"], f"link {name!r} listen"),
            target=parse_hostport(raw["target"], f"link {name!r} target"),
            delay_fwd=check_delay(f"link {name!r} delay_fwd", raw.get("delay_fwd", 0.0)),
            delay_rev=check_delay(f"link {name!r} delay_rev", raw.get("delay_rev", 0.0)),
            jitter=check_delay(f"link {name!r} jitter", raw.get("jitter", 0.0)),
            plane=plane,
            seed=seed,
        )

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["listen"] = format_hostport(self.listen)
        out["target"] = format_hostport(self.target)
        if self.seed is None:
            del out["seed"]
        return out


def parse_specs(raw: object) -> list[LinkSpec]:
    if not isinstance(raw, list):
        raise ValueError("link spec must be a JSON list of links")
    specs = [LinkSpec.from_dict(item) for item in raw]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate link names: {dupes}")
    fixed = [s.listen for s in specs if s.listen[1] != 0]
    clash = sorted({format_hostport(a) for a in fixed if fixed.count(a) > 1})
    if clash:
        raise ValueError(f"two links listen on the same address: {clash}")
    return specs


def load_specs(path: str | Path) -> list[LinkSpec]:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read link spec {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"link spec {path} is not valid JSON: {exc}") from None
    return parse_specs(raw)


def dump_specs(specs: list[LinkSpec], path: str | Path) -> None:
    Path(path).write_text(json.dumps([s.to_dict() for s in specs], indent=2) + "\n")
