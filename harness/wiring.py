"""Putting the configured latency on every link, and giving faults a handle on each link.

The backend is probed before anything starts and recorded with the results. `netem` shapes a link in the
kernel and needs each service in its own network namespace (the docker runtime); the local runtime has
every service on `lo`, so there it always uses the userspace proxy: one proxyd process holding one
order-preserving, per-direction delaying TCP proxy per link, whose counters also give the bytes per link.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.deploy import Link
from harness.errors import UserError
from harness.links.client import ProxyControl, launch_proxyd
from harness.links.netem import choose_backend

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
    if preference == "netem":
        raise UserError("link_backend: netem inside the containers' network namespaces is not wired up yet: "
                        "use link_backend proxy (or auto)")
    probe = choose_backend("auto")[1] if preference == "auto" else "requested"
    return "proxy", f"docker runtime: the userspace proxy on the run's bridge gateway ({probe})"


class ProxyWiring:
    """Routes every link through proxyd on its own address; a LinkControl for faults."""

    def __init__(self, host: str, time_scale: float, workdir: Path) -> None:
        self.host, self.scale, self.workdir = host, time_scale, workdir
        self.links: list[Link] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: ProxyControl | None = None

    def route(self, link: Link) -> str:
        """Called by the planner for each link: the caller dials a fresh proxy port."""
        self.links.append(link)
        return f"{self.host}:{PROXY_PORT_BASE + len(self.links)}"

    def start(self, env: dict[str, str]) -> None:
        spec = [{"name": link.name, "listen": link.address, "target": link.target, "plane": link.plane,
                 "delay_fwd": self.scale * link.delay_fwd, "delay_rev": self.scale * link.delay_rev}
                for link in self.links]
        spec_file = self.workdir / "links.json"
        spec_file.write_text(json.dumps(spec, indent=1), encoding="utf-8")
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        self.proc, self.ctl, _ = launch_proxyd(spec_file, f"{self.host}:0", ready_file=logs / "proxyd.ready",
                                               log_file=logs / "proxyd.log", env=env)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
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
