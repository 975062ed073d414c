"""Finding what a crashed run left behind: processes carrying MANOBENCH_RUN in their environment whose
owner (the harness process that started them, MANOBENCH_OWNER) is gone. A live run of another user or
terminal is never touched unless asked for (`harness clean --all`). The docker runtime's containers and
networks are found the same way, by their labels (`manobench.run`, `manobench.owner`): `docker_objects`.

Used by `harness clean`, at the start of every `harness run`, and by the test suite's final check that no
process survived it.
"""

from __future__ import annotations

import os

import psutil

from harness.runtime.local import OWNER_ENV, RUN_ENV, SESSION_ENV


def processes(run: str | None = None, *, orphans: bool = False, session: str | None = None) -> list[psutil.Process]:
    """Live labelled processes: of one run or any; only those whose owner died (`orphans`); only those of
    one test session. Never this process or its parents."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in mine:
            continue
        try:
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        value = env.get(RUN_ENV)
        if not value or (run is not None and value != run):
            continue
        if session is not None and env.get(SESSION_ENV) != session:
            continue
        if orphans and _owner_alive(env.get(OWNER_ENV)):
            continue
        found.append(proc)
    return found


def _owner_alive(owner: str | None) -> bool:
    """Whether the harness that started a process still runs (a reused pid counts as alive: be careful)."""
    return bool(owner and owner.isdigit() and psutil.pid_exists(int(owner)))


def end(procs: list[psutil.Process], grace: float = 2.0) -> int:
    """SIGTERM (after SIGCONT, in case they are paused), then SIGKILL what is left; returns how many ended."""
    for proc in procs:
        try:
            proc.resume()
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)


# --- containers and networks (the docker runtime) --------------------------------------------------------

def docker_objects(run: str | None = None, *, orphans: bool = False, session: str | None = None
                   ) -> list[dict[str, str]]:
    """Containers, then networks, labelled `manobench.run` (of one run, whose owner died, of one test session).

    Each as {"kind": "container" | "network", "id", "name", "run", "owner"}. Empty where Docker is absent.
    """
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return []
    filters = ["--filter", f"label=manobench.run={run}" if run else "label=manobench.run"]
    if session:
        filters += ["--filter", f"label=manobench.session={session}"]
    fmt = '{{.ID}}\t{{.Names}}\t{{.Label "manobench.run"}}\t{{.Label "manobench.owner"}}'
    nfmt = '{{.ID}}\t{{.Name}}\t{{index .Labels "manobench.run"}}\t{{index .Labels "manobench.owner"}}'
    found = []
    for kind, argv in (("container", ["docker", "ps", "-a", *filters, "--format", fmt]),
                       ("network", ["docker", "network", "ls", *filters, "--format", "{{.ID}}"])):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = proc.stdout.split() if kind == "network" else proc.stdout.splitlines()
        if kind == "network" and lines:
            proc = subprocess.run(["docker", "network", "inspect", "--format", nfmt, *lines], capture_output=True,
                                  text=True, timeout=60, check=False)
            lines = proc.stdout.splitlines()
        for line in lines:
            parts = line.split("\t")
            if len(parts) != 4:
                continue
            obj = dict(zip(("id", "name", "run", "owner"), parts, strict=True), kind=kind)
            if orphans and _owner_alive(obj["owner"]):
                continue
            found.append(obj)
    return found


def remove_docker(objects: list[dict[str, str]]) -> int:
    """Remove containers (thawed first: a frozen one cannot die), then networks; returns how many went."""
    import subprocess

    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)

    containers = [o["id"] for o in objects if o["kind"] == "container"]
    networks = [o["id"] for o in objects if o["kind"] == "network"]
    if containers:
        for c in containers:
            _thaw(c)
        docker("rm", "-f", "-v", *containers)
    if networks:
        docker("network", "rm", *networks)
    return len(objects)


def _thaw(container: str) -> None:
    """Undo a pause, whether made by `docker pause` or by writing the cgroup freezer directly."""
    import subprocess
    from pathlib import Path

    proc = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}} {{.State.Paused}}", container],
                          capture_output=True, text=True, timeout=30, check=False)
    pid, _, paused = proc.stdout.strip().partition(" ")
    if paused == "true":
        subprocess.run(["docker", "unpause", container], capture_output=True, timeout=30, check=False)
    if pid.isdigit() and pid != "0":
        try:
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, ctrls, path = line.split(":", 2)
                if "freezer" in ctrls.split(","):
                    Path("/sys/fs/cgroup/freezer", path.lstrip("/"), "freezer.state").write_text("THAWED")
                elif ctrls == "":
                    freeze = Path("/sys/fs/cgroup", path.lstrip("/"), "cgroup.freeze")
                    if freeze.exists():
                        freeze.write_text("0")
        except OSError:
            pass
