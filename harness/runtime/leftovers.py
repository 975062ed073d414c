"""Finding what a crashed run left behind: processes carrying MANOBENCH_RUN in their environment whose
owner (the harness process that started them, MANOBENCH_OWNER) is gone. A live run of another user or
terminal is never touched unless asked for (`harness clean --all`). The docker runtime's containers and
networks are found the same way, by their labels (`manobench.run`, `manobench.owner`), through the Docker SDK:
`docker_objects`, `remove_docker`.

Used by `harness clean`, at the start of every `harness run`, and by the test suite's final check that no
process survived it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import psutil

from harness.runtime.broker_data import records, remove_data
from harness.runtime.run_env import OWNER_ENV, RUN_ENV, SESSION_ENV

if TYPE_CHECKING:
    from docker import DockerClient


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


def this_session() -> str | None:
    """The test session this process belongs to (MANOBENCH_SESSION), or None outside a test suite. A run's
    start-up sweep reaps only its own session's orphans, so concurrent suites (or xdist workers) on one
    machine never end each other's deliberately orphaned processes."""
    return os.environ.get(SESSION_ENV) or None


def _owner_alive(owner: str | None) -> bool:
    """Whether the harness that started a process still runs (a reused pid counts as alive: be careful)."""
    return bool(owner and owner.isdigit() and psutil.pid_exists(int(owner)))


def end(procs: list[psutil.Process], grace: float = 2.0) -> int:
    """SIGTERM (after SIGCONT, in case they are paused), then SIGKILL what is left; returns how many ended.

    Then the brokers' data directories of the runs they belonged to go, once no labelled process of such a run
    is left: only directories the harness recorded under its own state root (`broker_data.remove_data`), never a
    path read from a process's environment, which any local process can set. A process that merely borrows a
    live run's label is ended, and that run's data stays while its own processes live."""
    runs = {run for run in map(_run_of, procs) if run}
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
    if runs:
        remove_data(runs - {_run_of(p) for p in processes()})
    return len(procs)


def remove_stale_data(run: str | None = None) -> list[str]:
    """Remove the recorded broker data directories nobody can use any more: their harness is gone and no
    labelled process of their run lives (a machine restarted, a broker that died with its harness). Returns
    the runs whose data went. For `harness clean`, after `end`; a live run's data is never touched."""
    dead = {rec["run"] for _, rec in records()
            if (run is None or rec["run"] == run) and not _owner_alive(str(rec.get("owner", "")))}
    if not dead:
        return []
    unused = dead - {_run_of(p) for p in processes()}
    remove_data(unused)
    return sorted(unused)


def _run_of(proc: psutil.Process) -> str:
    """The run label of a process ("" when it is gone or unreadable)."""
    try:
        return str(proc.environ().get(RUN_ENV, ""))
    except (psutil.Error, OSError):
        return ""


# --- containers and networks (the docker runtime) --------------------------------------------------------

def _engine() -> DockerClient | None:
    """The Engine's client, or None where no Engine answers (then there is nothing of ours to find)."""
    from harness.errors import UserError
    from harness.runtime import engine

    try:
        return engine.client()
    except UserError:
        return None


def docker_objects(run: str | None = None, *, orphans: bool = False, session: str | None = None
                   ) -> list[dict[str, str]]:
    """Swarm services, containers, then networks, labelled `manobench.run` (of one run, whose owner died, of one
    test session).

    Each as {"kind": "service" | "container" | "network", "id", "name", "run", "owner"}. Empty where Docker is
    absent. Two Engine list calls, three on a swarm manager (the listings carry the labels, so nothing is
    inspected one by one).
    """
    client = _engine()
    if client is None:
        return []
    filters = {"label": [f"manobench.run={run}" if run else "manobench.run"]
                        + ([f"manobench.session={session}"] if session else [])}
    listed = [("container", c["Id"], c["Names"][0].lstrip("/") if c.get("Names") else c["Id"][:12], c["Labels"])
              for c in client.api.containers(all=True, filters=filters)]
    listed += [("network", n["Id"], n["Name"], n["Labels"]) for n in client.api.networks(filters=filters)]
    listed = [(kind, ident, name, lab or {}) for kind, ident, name, lab in _services(client, filters)] + listed
    found = []
    for kind, ident, name, lab in listed:
        obj = {"kind": kind, "id": ident, "name": name, "run": lab.get("manobench.run", ""),
               "owner": lab.get("manobench.owner", "")}
        if orphans and _owner_alive(obj["owner"]):
            continue
        found.append(obj)
    return found


def _services(client: DockerClient, filters: dict[str, list[str]]) -> list[tuple[str, str, str, dict[str, str]]]:
    """Swarm services (the swarm runtime's instances and agent) with those labels; none where the Engine
    manages no swarm (its answer is then an error: one `info` call first avoids asking)."""
    from docker.errors import DockerException

    try:
        if not (client.info().get("Swarm") or {}).get("ControlAvailable"):
            return []
        return [("service", s["ID"], s["Spec"]["Name"], s["Spec"].get("Labels") or {})
                for s in client.api.services(filters=filters)]
    except DockerException:
        return []


def remove_docker(objects: list[dict[str, str]]) -> int:
    """Remove swarm services (their tasks go with them), containers (thawed first: a frozen one cannot die), then
    networks; returns how many went.

    Containers go four at a time: the Engine's removal (unmounting the container's layer) is most of the
    time, and it overlaps. An overlay network is refused while a removed service's tasks still hold
    endpoints on it, so its removal is retried for a few seconds."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    client = _engine()
    if client is None or not objects:
        return 0
    for svc in (o["id"] for o in objects if o["kind"] == "service"):
        _quietly(client.api.remove_service, svc)
    containers = [o["id"] for o in objects if o["kind"] == "container"]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda ident: _remove_container(client, ident), containers))
    networks = [o["id"] for o in objects if o["kind"] == "network"]
    deadline = time.monotonic() + (20 if any(o["kind"] == "service" for o in objects) else 0)
    while networks:
        networks = [net for net in networks if not _gone(client, net)]
        if not networks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return len(objects)


def _gone(client: DockerClient, network: str) -> bool:
    """Remove a network; True once it is no more (removed now, or already)."""
    from docker.errors import DockerException, NotFound

    try:
        client.api.remove_network(network)
    except NotFound:
        return True
    except DockerException:
        return False
    return True


def _remove_container(client: DockerClient, ident: str) -> None:
    """Thaw (a pause made by `docker pause` or by writing the freezer directly), then remove by force."""
    from harness.runtime.cgroups import runs_here, thaw

    state = _quietly(client.api.inspect_container, ident)
    if state:
        if state["State"].get("Paused"):
            _quietly(client.api.unpause, ident)
        pid = int(state["State"].get("Pid") or 0)
        if runs_here(pid, ident):
            thaw(pid)
    _quietly(client.api.remove_container, ident, force=True, v=True)


P = ParamSpec("P")
R = TypeVar("R")


def _quietly(call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R | None:
    """An Engine call whose failure (already gone, in use) leaves nothing to do; None then."""
    from docker.errors import DockerException

    try:
        return call(*args, **kwargs)
    except DockerException:
        return None
