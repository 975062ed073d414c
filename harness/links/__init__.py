"""Link latency for a deployment: kernel netem where available, else a userspace proxy per link (proxyd).

Importing this package does not import aiohttp; only the daemon (`harness.links.proxyd`) needs it.
"""

from harness.links.netem import NetemProbe, choose_backend, probe_netem
from harness.links.proxy import LinkProxy
from harness.links.proxyd_control import ProxyControl, ProxyControlError, launch_proxyd
from harness.links.spec import PLANE_NAME, LinkSpec, dump_specs, load_specs, parse_hostport

__all__ = [
    "PLANE_NAME",
    "LinkProxy",
    "LinkSpec",
    "NetemProbe",
    "ProxyControl",
    "ProxyControlError",
    "choose_backend",
    "dump_specs",
    "launch_proxyd",
    "load_specs",
    "parse_hostport",
    "probe_netem",
]
