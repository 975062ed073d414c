"""Putting the configured latency on every link, and giving faults a handle on each link.

The backend is probed before anything starts and recorded with the results. `netem` shapes a link in the
kernel and needs each service in its own network namespace: with the docker runtime, `auto` takes it where
the kernel has sch_netem (`harness.links.netem_wiring.NetemWiring`: tc inside each container's namespace).
Everywhere else, and always with the local runtime (every service on `lo`), it is the userspace proxy: one
proxyd process holding one order-preserving, per-direction delaying TCP proxy per link, whose counters also
give the bytes per link.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from harness.errors import UserError
from harness.links.netem import choose_backend, probe_netem
from harness.links.netem_wiring import LEAF_ENV, configured_leaf, probe_classifier
from harness.links.proxyd_control import ProxyControl, ProxyControlError, launch_proxyd
from harness.plan.deploy import Link
from harness.runtime.contract import Runtime

PROXY_PORT_BASE = 20000


def select_backend(preference: str, runtime: str) -> tuple[str, str]:
    """(backend, why): what will carry link latency in this run, decided before anything starts."""
    if runtime == "local":
        if preference == "netem":
            raise UserError("link_backend: netem needs a network namespace per service: use --runtime docker, "
                            "or link_backend proxy")
        backend, _why = choose_backend("proxy")
        probe = choose_backend("auto")[1]
        return backend, f"local runtime: every service shares lo, so the userspace proxy ({probe})"
    if runtime == "swarm":  # services on other hosts: tc would have to run there (docs/swarm.md)
        if preference == "netem":
            raise UserError("link_backend: netem is not wired for the swarm runtime yet: use link_backend proxy")
        return "proxy", "swarm runtime: the userspace proxy on the run's overlay gateway"
    return _docker_backend(preference)


def _docker_backend(preference: str) -> tuple[str, str]:
    """docker: netem in each container's namespace where the kernel has it (probed), else the proxy."""
    proxy = "docker runtime: the userspace proxy on the run's bridge gateway"
    if preference == "proxy":
        return "proxy", f"{proxy} (requested)"
    if preference not in ("auto", "netem"):
        choose_backend(preference)  # refuses an unknown name in one line
    if configured_leaf()[0] == "pfifo":
        works, tree = probe_classifier("pfifo")
        if not works:
            raise UserError(f"link_backend: {LEAF_ENV}=pfifo but the tc classifier fails here: {tree}")
        return "netem", (f"docker runtime: tc in each container's network namespace with pfifo leaves "
                         f"({LEAF_ENV}=pfifo): classes, filters and cuts only, NO link delay; {tree}")
    probe = probe_netem()
    works, tree = probe_classifier("netem") if probe.available else (False, "")
    if probe.available and works:
        return "netem", (f"docker runtime: netem in each container's network namespace (nsenter -t PID -n tc; "
                         f"{probe.reason}; {tree})")
    reason = probe.reason if not probe.available else f"{probe.reason}, but the per-link classifier failed: {tree}"
    if preference == "netem":
        raise UserError(f"link_backend: netem is not available here ({reason}): use link_backend proxy or auto")
    return "proxy", f"{proxy} (netem probe: {reason})"


class ProxyWiring:
    """Routes every link through proxyd on its own address (a `LinkBackend`)."""

    name = "proxy"

    def __init__(self, host: str, time_scale: float, workdir: Path, secret: str | None = None) -> None:
        """`secret`: proxyd's control key (protocol.auth; default a fresh one): docs/security.md."""
        self.host, self.scale, self.workdir = host, time_scale, workdir
        self.secret = secret
        self.refused_at_stop = 0
        self.links: list[Link] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: ProxyControl | None = None

    def route(self, link: Link) -> str:
        """Called by the planner for each link: the caller dials a fresh proxy port."""
        self.links.append(link)
        return f"{self.host}:{PROXY_PORT_BASE + len(self.links)}"

    def before_up(self, runtime: Runtime) -> None:
        """proxyd listens on every link's address before any service dials one."""
        self.start(runtime.env({}))

    def after_up(self) -> dict[str, object]:
        return {}

    def pids(self) -> dict[str, int]:
        return {"proxyd": self.proc.pid} if self.proc else {}

    def start(self, env: dict[str, str]) -> None:
        spec = [{"name": link.name, "listen": link.address, "target": link.target, "plane": link.plane,
                 "delay_fwd": self.scale * link.delay_fwd, "delay_rev": self.scale * link.delay_rev}
                for link in self.links]
        spec_file = self.workdir / "links.json"
        spec_file.write_text(json.dumps(spec, indent=1), encoding="utf-8")
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        self.proc, self.ctl, _ = launch_proxyd(spec_file, f"{self.host}:0", ready_file=logs / "proxyd.ready",
                                               log_file=logs / "proxyd.log", env=env, secret=self.secret)

    def refused(self) -> dict[str, int]:
        """Control requests proxyd refused (read live while it runs, kept from its last reading at stop)."""
        if self.ctl is not None and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProxyControlError):
                self.refused_at_stop = self.ctl.refused()
        return {"proxyd": self.refused_at_stop}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.refused()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # --- LinkControl -------------------------------------------------------------------------------------
    def set_delay(self, link: Link, fwd: float, rev: float) -> None:
        assert self.ctl
        self.ctl.set(link.name, delay_fwd=self.scale * fwd, delay_rev=self.scale * rev)

    def cut(self, link: Link) -> None:
        assert self.ctl
        self.ctl.cut(link.name)

    def heal(self, link: Link) -> None:
        assert self.ctl
        self.ctl.heal(link.name)

    def counters(self) -> dict[str, dict[str, object]]:
        """Per link: bytes each way as the proxy forwarded them (TCP payload: HTTP headers + bodies)."""
        return self.ctl.links() if self.ctl else {}
