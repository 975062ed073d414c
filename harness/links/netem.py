"""Pick the link-latency backend: kernel netem where it works, the userspace proxy everywhere else.

Whether netem works is a property of the running kernel (the sch_netem module), so the probe tries it for
real, but inside a throwaway network namespace: the host's interfaces and qdiscs are never touched, and the
namespace is deleted whatever happens.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import UserError

BACKENDS = ("auto", "netem", "proxy")
_CMD_TIMEOUT = 5.0


@dataclass(frozen=True)
class NetemProbe:
    available: bool
    reason: str


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=_CMD_TIMEOUT, check=False)


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or "").strip().replace("\n", " ")
    return text or f"exit code {proc.returncode}"


@functools.cache
def probe_netem() -> NetemProbe:
    """Try ``tc qdisc add dev lo root netem delay 1ms`` in a fresh namespace; cached for the process."""
    if os.geteuid() != 0:
        return NetemProbe(False, "netem needs root (network namespaces and tc); running as a normal user")
    ip, tc = shutil.which("ip"), shutil.which("tc")
    if ip is None or tc is None:
        missing = " and ".join(name for name, path in (("ip", ip), ("tc", tc)) if path is None)
        return NetemProbe(False, f"netem needs iproute2: {missing} not found on PATH")
    ns = f"mb-probe-{secrets.token_hex(4)}"
    try:
        made = _run([ip, "netns", "add", ns])
        if made.returncode != 0:
            return NetemProbe(False, f"cannot create a network namespace to probe netem: {_why(made)}")
        up = _run([ip, "-n", ns, "link", "set", "lo", "up"])
        if up.returncode != 0:
            return NetemProbe(False, f"cannot bring up lo in the probe namespace: {_why(up)}")
        qdisc = _run([ip, "netns", "exec", ns, tc, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
        if qdisc.returncode != 0:
            return NetemProbe(False, f"tc netem failed (kernel lacks sch_netem?): {_why(qdisc)}")
        return NetemProbe(True, "tc netem works (probed in a throwaway network namespace)")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return NetemProbe(False, f"netem probe failed: {exc}")
    finally:
        _delete_netns(ip, ns)


def _delete_netns(ip: str, ns: str) -> None:
    """Best effort, and never raises: a leftover namespace is harmless but must not hide the probe result."""
    try:
        _run([ip, "netns", "del", ns])
    except (OSError, subprocess.TimeoutExpired):
        pass


def choose_backend(preference: str = "auto") -> tuple[str, str]:
    """Return ("netem" | "proxy", why). "netem" on a kernel without it is the user's error, said in one line."""
    if preference not in BACKENDS:
        raise UserError(f"link backend must be one of {', '.join(BACKENDS)}, got {preference!r}")
    if preference == "proxy":
        return "proxy", "userspace latency proxy requested"
    probe = probe_netem()
    if probe.available:
        return "netem", probe.reason
    if preference == "netem":
        raise UserError(f"link backend 'netem' is not available here: {probe.reason}; use 'proxy' or 'auto'")
    return "proxy", f"netem unavailable, using the userspace latency proxy: {probe.reason}"
