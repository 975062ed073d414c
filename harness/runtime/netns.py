"""Moving the harness's own thread into another network namespace (the swarm runtime's overlay gateway).

Why: a Docker Swarm run's services live on an overlay network, which has no address on the host; the
harness side (collector, BSS, proxies, Locust, the wire capture) must listen and dial *on* that overlay, as it
does on the docker runtime's bridge. The swarm runtime therefore attaches one standalone container to the
(attachable) overlay, the gateway, and moves the harness's event-loop thread into the gateway's network
namespace with setns(2) for the run. Every socket that thread opens from then on is on the overlay, and every
process it spawns (proxyd, Locust, the capture) inherits the namespace. Unix sockets (the Docker Engine's)
are not network-namespaced, so the Engine stays reachable. setns affects the calling thread only: threads
created before keep the host's namespace, so the runtime also gives the event loop a fresh default executor
(its threads are created from the moved thread and inherit its namespace). Python 3.11 has no os.setns:
ctypes calls libc's.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


class NetnsSwitch:
    """Enter the network namespace of `pid` on this thread; `leave` returns it to where it was."""

    def __init__(self) -> None:
        self._home: int | None = None

    @property
    def inside(self) -> bool:
        return self._home is not None

    def enter(self, pid: int) -> None:
        if self._home is not None:
            return
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        except OSError:
            os.close(home)
            raise
        finally:
            os.close(target)
        self._home = home

    def leave(self) -> None:
        if self._home is None:
            return
        try:
            _setns(self._home)
        finally:
            os.close(self._home)
            self._home = None
