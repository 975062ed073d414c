"""Docker-in-Docker swarm nodes for the multi-node test, and what this machine allows of them, measured.

A node is a container of `manobench-dind` (a debootstrapped Debian bookworm with Debian's `docker.io`, built
here without any registry: `python -m tests.swarm_dind build`), with every capability but CAP_SYS_RESOURCE
(not `--privileged`, which this host cannot start: see CAPS), running its own dockerd on a tmpfs (`vfs`: no
overlay-on-overlay; each of its containers is a full copy of the image, which makes a node's task start
take seconds), with the host's pid namespace (so the pids its Engine reports are
this host's, and the harness, on this host, can signal and enter its containers as it does on a real
manager), and its Engine's socket in a host directory (`unix:///tmp/.../docker.sock`). Nodes talk on a bridge
network of their own (internal: nothing leaves the machine); the swarm's overlay runs over it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from docker.client import DockerClient
from docker.errors import DockerException

from harness.runtime import engine, image

DIND_IMAGE = "manobench-dind:latest"
# every capability but CAP_SYS_RESOURCE: this host's bounding set lacks it (CapBnd 000001fffeffffff), so a
# --privileged container (all capabilities) fails to start here ("runc: unable to apply caps: operation not
# permitted", measured); a node gets these, no seccomp or AppArmor profile, and the host's cgroups read-write
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE",
        "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ"]
PACKAGES = ["docker.io", "iptables", "ca-certificates", "python3-minimal"]


def build(say=print) -> str:
    """debootstrap bookworm with Debian's docker.io and import it as manobench-dind (minutes; once)."""
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(prefix="manobench-dind-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        t0 = time.monotonic()
        proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", "bookworm",
                               str(rootfs), mirror], capture_output=True, text=True, check=False, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed: {proc.stderr[-2000:]}")
        say(f"debootstrap: {time.monotonic() - t0:.0f} s")
        for trim in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/lib/apt/lists", "var/cache/apt"):
            shutil.rmtree(rootfs / trim, ignore_errors=True)
        image.import_rootfs(rootfs, DIND_IMAGE, ['CMD ["dockerd"]', "LABEL manobench=1", "LABEL manobench.image=dind"])
    return DIND_IMAGE


def dind_problem() -> str | None:
    """Why 2 Docker-in-Docker swarm nodes cannot run here, or None (measured by starting one)."""
    ok, why = image.available()
    if not ok:
        return why
    if not image.exists(DIND_IMAGE):
        return (f"no {DIND_IMAGE} image here (Debian's docker.io in a debootstrapped base, not built by setup: "
                "`python -m tests.swarm_dind build`, 48 s here; the test then takes about 145 s on 2 cores)")
    return None


@contextlib.contextmanager
def nodes(count: int, labels: dict[str, str]) -> Iterator[list[str]]:
    """`count` DinD nodes in one swarm (the first the manager); yields their Engine URLs. Everything goes again."""
    client = engine.client()
    tag = f"{os.getpid()}{int(time.time()) % 100000}"
    net = client.networks.create(f"mbdind{tag}", driver="bridge", internal=True, labels=labels)
    root = Path(tempfile.mkdtemp(prefix="manobench-dind-"))
    containers = []
    urls = []
    try:
        for i in range(count):
            sock_dir = root / f"n{i}"
            sock_dir.mkdir()
            c = client.containers.run(
                DIND_IMAGE, ["dockerd", "-H", "unix:///var/run/docker.sock", "-H", "unix:///run/dind/docker.sock",
                             "--storage-driver", "vfs", f"--cgroup-parent=/mbdind{tag}n{i}"],
                detach=True, cap_add=CAPS, security_opt=["seccomp=unconfined", "apparmor=unconfined"],
                pid_mode="host", name=f"mbdind{tag}-n{i}", hostname=f"node{i}", network=net.name, labels=labels,
                tmpfs={"/var/lib/docker": "exec,size=4g", "/run/docker": "exec"},
                volumes={str(sock_dir): {"bind": "/run/dind", "mode": "rw"},
                         "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}})
            containers.append(c)
            urls.append(f"unix://{sock_dir}/docker.sock")
        for url in urls:
            _await_engine(url)
        addrs = [client.api.inspect_container(c.id)["NetworkSettings"]["Networks"][net.name]["IPAddress"]
                 for c in containers]
        manager = DockerClient(base_url=urls[0])
        manager.swarm.init(advertise_addr=addrs[0], listen_addr=f"{addrs[0]}:2377")
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for url, addr in zip(urls[1:], addrs[1:], strict=True):
            DockerClient(base_url=url).swarm.join([f"{addrs[0]}:2377"], token, advertise_addr=addr,
                                                  listen_addr=f"{addr}:2377")
        yield urls
    finally:
        for url in urls:  # every nested container stops with its dockerd; swarm state goes with the tmpfs
            with contextlib.suppress(DockerException, OSError):
                inner = DockerClient(base_url=url, timeout=10)
                for svc in inner.services.list():
                    svc.remove()
                for ctr in inner.containers.list(all=True):
                    ctr.remove(force=True)
        for c in client.containers.list(all=True, filters={"name": f"mbdind{tag}-"}):  # a failed start too
            with contextlib.suppress(DockerException):
                c.stop(timeout=10)
                c.remove(force=True, v=True)
        with contextlib.suppress(DockerException):
            net.remove()
        shutil.rmtree(root, ignore_errors=True)


def _await_engine(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            DockerClient(base_url=url, timeout=5).version()
            return
        except DockerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    if sys.argv[1:] == ["build"]:
        print(build())
