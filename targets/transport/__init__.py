"""The transport a service's messages travel by, behind one small interface.

A service is written against `targets.http`: it routes handlers on its planes (`Planes.route`) and posts
messages to the addresses of its spec (`Client.post`). On the HTTP transport that is all there is. With
`transport: amqp` the spec carries `bus` (protocol.spec) and `serve` installs one `Transport` for the
process before the service starts: then `Planes.start` also subscribes every routed message kind to the
bus, and `Client.post` hands every `bus:` address to it (protocol.bus). Handlers and callers do not change:
a bus message reaches the same handler as the HTTP request would, and the caller gets the same (reply,
bytes sent, bytes received), or an OSError / TimeoutError as when an HTTP peer is gone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Transport(Protocol):
    """What a service's messages need of a transport other than plain HTTP."""

    async def serve(self, routes: list[tuple[str, str, str, Handler]]) -> None:
        """Deliver the messages of each (plane, method, path, handler) routed to this instance."""

    async def post(self, addr: str, path: str, body: dict[str, Any], size: int, timeout: float
                   ) -> tuple[dict[str, Any], int, int]:
        """Send `body` padded to `size` bytes to `addr` and wait for the reply, like `Client.post`."""

    async def close(self) -> None:
        """Leave the transport (the service is stopping)."""


_current: Transport | None = None


def install(transport: Transport | None) -> None:
    """The one transport of this process (a process is one service instance)."""
    global _current
    _current = transport


def current() -> Transport | None:
    return _current
