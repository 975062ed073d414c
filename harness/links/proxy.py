"""A userspace TCP latency proxy: one `LinkProxy` per link, used where the kernel has no sch_netem.

Every chunk read from one side is stamped with its delivery time, ``arrival + delay + jitter``, and a
per-direction timer writes it to the other side at that moment (``loop.call_at``, so errors never add up
across chunks). A chunk is never delivered before the one read ahead of it, which keeps TCP's in-order
semantics under jitter. Close and reset travel through the same queue as data, so a FIN or RST reaches the
other side only after the data that was sent before it: the far end sees what it would see over a slow wire.

All methods must be called from the event loop thread the proxy was started on.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import struct
from collections import deque
from typing import Literal

MiB = 1024 * 1024
DEFAULT_MAX_QUEUED = 8 * MiB

# A timer may fire a hair before its deadline (the loop treats "due within clock resolution" as due).
_EARLY = 1e-6

_DATA, _EOF, _ABORT = 0, 1, 2

Direction = Literal["fwd", "rev"]


def check_delay(name: str, value: object) -> float:
    """A delay or jitter in seconds: a finite, non-negative number (bools are a typo, not a delay)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0 seconds, got {value!r}")
    return value


def _abort_with_rst(transport: asyncio.Transport) -> None:
    """Abort so the peer gets an RST: a plain abort() sends FIN when the receive buffer happens to be empty."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: the accepted client socket or the upstream socket to the target."""

    def __init__(self, conn: _Conn, role: Literal["client", "server"]) -> None:
        self.conn = conn
        self.role = role
        self.transport: asyncio.Transport | None = None
        self.got_eof = False  # the peer behind this socket shut down its sending side
        self.sent_eof = False  # we shut down our sending side toward the peer
        self.closing = False  # we closed or aborted it, so its loss is expected
        self.lost = False
        self.write_paused = False
        self.read_paused = False

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.conn.pipe_from(self).push(_DATA, data)

    def eof_received(self) -> bool:
        self.got_eof = True
        self.conn.pipe_from(self).push(_EOF, b"")
        self.maybe_close()
        return True  # keep the socket open for writing: a half-close must stay a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.side_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.conn.pipe_to(self).update_flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.conn.pipe_to(self).update_flow()

    # helpers

    def maybe_close(self) -> None:
        """Close once both directions are shut down; transport.close() still flushes what is buffered."""
        if self.got_eof and self.sent_eof and self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            _abort_with_rst(self.transport)

    def set_reading(self, paused: bool) -> None:
        if self.transport is None or self.closing or paused == self.read_paused:
            return
        self.read_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()


class _Pipe:
    """One direction of one connection: the delay queue between a source socket and a destination socket."""

    def __init__(self, proxy: LinkProxy, src: _Side, dst: _Side, direction: Direction) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.src = src
        self.dst = dst
        self.direction: Direction = direction
        self.queue: deque[tuple[float, int, bytes]] = deque()
        self.pending = 0  # data bytes queued, not yet handed to the destination socket
        self.last = 0.0  # delivery time of the newest queued item: nothing may overtake it
        self.timer: asyncio.TimerHandle | None = None
        self.dead = False

    def push(self, kind: int, data: bytes) -> None:
        if self.dead:
            return
        proxy = self.proxy
        delay = proxy.delay_fwd if self.direction == "fwd" else proxy.delay_rev
        if proxy.jitter > 0:
            delay += proxy.rng.uniform(0.0, proxy.jitter)
        when = max(self.loop.time() + delay, self.last)
        self.last = when
        self.queue.append((when, kind, data))
        self.pending += len(data)
        self.update_flow()
        self.schedule()

    def schedule(self) -> None:
        """Arm the timer for the head of the queue; FIFO order means an armed timer is never too late."""
        if (self.timer is not None or not self.queue or self.dead or self.proxy.is_cut
                or self.dst.transport is None):
            return
        self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.dead or self.proxy.is_cut or self.dst.transport is None:
            return
        transport = self.dst.transport
        deadline = self.loop.time() + _EARLY
        batch: list[bytes] = []
        while self.queue and self.queue[0][0] <= deadline:
            _, kind, data = self.queue.popleft()
            if kind == _DATA:
                batch.append(data)
                continue
            self._write(transport, batch)
            batch = []
            if kind == _EOF:
                self.dst.sent_eof = True
                if transport.can_write_eof() and not transport.is_closing():
                    transport.write_eof()
                self.dst.maybe_close()
            else:
                self.dst.abort()
                self.kill()
                return
        self._write(transport, batch)
        self.update_flow()
        self.schedule()

    def _write(self, transport: asyncio.Transport, batch: list[bytes]) -> None:
        if not batch:
            return
        n = sum(map(len, batch))
        self.pending -= n
        if self.direction == "fwd":
            self.proxy.bytes_fwd += n
        else:
            self.proxy.bytes_rev += n
        if not transport.is_closing():
            transport.writelines(batch)

    def update_flow(self) -> None:
        """Bound memory: stop reading the source while too much is queued or the destination is full."""
        if self.dead:
            return
        limit = self.proxy.max_queued
        if self.src.read_paused:
            if self.pending <= limit // 2 and not self.dst.write_paused:
                self.src.set_reading(False)
        elif self.pending > limit or self.dst.write_paused:
            self.src.set_reading(True)

    def kill(self) -> None:
        """The destination is gone: nothing queued for it can be delivered any more."""
        self.dead = True
        self.queue.clear()
        self.pending = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Conn:
    """One accepted client connection and its upstream connection to the target."""

    def __init__(self, proxy: LinkProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, "client")
        self.server = _Side(self, "server")
        self.fwd = _Pipe(proxy, self.client, self.server, "fwd")
        self.rev = _Pipe(proxy, self.server, self.client, "rev")
        self.connect_task: asyncio.Task[None] | None = None
        self.registered = False

    def pipe_from(self, side: _Side) -> _Pipe:
        return self.fwd if side is self.client else self.rev

    def pipe_to(self, side: _Side) -> _Pipe:
        return self.rev if side is self.client else self.fwd

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            self.registered = True
            self.proxy._conn_opened(self)
            if not self.proxy.is_cut:
                self.start_connect()
        else:
            if self.client.lost:  # the client went away while we were connecting
                side.abort()
                return
            self.fwd.schedule()
            self.rev.update_flow()

    def start_connect(self) -> None:
        """Open the upstream socket; during a partition this waits for heal(), like a SYN that cannot pass."""
        if self.connect_task is None and not self.client.lost:
            self.connect_task = self.proxy.loop.create_task(self._connect())

    async def _connect(self) -> None:
        host, port = self.proxy.target
        try:
            await self.proxy.loop.create_connection(lambda: self.server, host, port)
        except OSError:
            # The target refused or is unreachable: the client sees a reset, one reverse delay later.
            self.server.lost = True
            self.rev.push(_ABORT, b"")
            self._maybe_done()

    def side_lost(self, side: _Side) -> None:
        self.pipe_to(side).kill()
        if not side.closing:
            # The peer reset the connection (or it broke): pass the reset on after the data sent before it.
            other = self.server if side is self.client else self.client
            if other.transport is not None or (other is self.server and self.connect_task is not None):
                self.pipe_from(side).push(_ABORT, b"")
        if side is self.client and self.server.transport is None:
            if self.connect_task is not None:
                self.connect_task.cancel()
            self.server.lost = True
            self.fwd.kill()
        self._maybe_done()

    def abort_all(self) -> None:
        if self.connect_task is not None and self.server.transport is None:
            self.connect_task.cancel()
            self.server.lost = True
        self.fwd.kill()
        self.rev.kill()
        self.client.abort()
        self.server.abort()

    def kick(self) -> None:
        """After heal(): connect if that was held back, and deliver everything that is now due."""
        self.start_connect()
        self.fwd.schedule()
        self.rev.schedule()

    def _maybe_done(self) -> None:
        if self.client.lost and self.server.lost and self.registered:
            self.registered = False
            self.proxy._conn_closed(self)


class LinkProxy:
    """A delaying TCP forwarder for one link (source service -> destination service).

    Per-direction delays are seconds; ``jitter`` adds a uniform sample from [0, jitter] per chunk from an
    RNG seeded with ``seed`` (or the link name), so runs repeat. ``max_queued`` bounds the bytes held per
    direction per connection before the proxy stops reading that source (TCP backpressure).
    Byte counters count bytes handed on to the other side, not bytes still held.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        delay_fwd: float = 0.0,
        delay_rev: float = 0.0,
        jitter: float = 0.0,
        name: str = "",
        seed: int | str | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        self.name = name
        self.listen = listen
        self.target = target
        self.delay_fwd = check_delay("delay_fwd", delay_fwd)
        self.delay_rev = check_delay("delay_rev", delay_rev)
        self.jitter = check_delay("jitter", jitter)
        self.rng = random.Random(seed if seed is not None else f"link:{name}")
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1 byte, got {max_queued!r}")
        self.max_queued = max_queued
        self.bytes_fwd = 0
        self.bytes_rev = 0
        self.connections_total = 0
        self._conns: set[_Conn] = set()
        self._cut = False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("LinkProxy.start() has not been called")
        return self._loop

    async def start(self) -> None:
        """Bind the listener; afterwards ``listen`` holds the real port (useful when it was 0)."""
        self._loop = asyncio.get_running_loop()
        host, port = self.listen
        self._server = await self._loop.create_server(
            lambda: _Conn(self).client, host, port, reuse_address=True, backlog=512,
        )
        self.listen = (host, self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and abort every connection, so nothing lingers after the link is torn down."""
        if self._server is not None:
            self._server.close()
            self.reset()
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks run

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self.listen[1]

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def connections(self) -> int:
        """Connections currently open (accepted and not yet fully closed on both sides)."""
        return len(self._conns)

    @property
    def queued_fwd(self) -> int:
        return sum(c.fwd.pending for c in self._conns)

    @property
    def queued_rev(self) -> int:
        return sum(c.rev.pending for c in self._conns)

    def set(
        self, *, delay_fwd: float | None = None, delay_rev: float | None = None, jitter: float | None = None,
    ) -> None:
        """Change latency live (a latency-spike fault). Applies to data read from now on; order still holds."""
        new = {
            key: check_delay(key, value)
            for key, value in (("delay_fwd", delay_fwd), ("delay_rev", delay_rev), ("jitter", jitter))
            if value is not None
        }
        for key, value in new.items():
            setattr(self, key, value)

    def cut(self) -> None:
        """Partition the link: hold all data (both ways) and new connections until heal(); drop nothing."""
        self._cut = True

    def heal(self) -> None:
        """End a partition: held connections are opened and held data delivered, in order."""
        if not self._cut:
            return
        self._cut = False
        for conn in list(self._conns):
            conn.kick()

    def reset(self) -> int:
        """Abort every current connection with an RST to both ends; returns how many were aborted."""
        conns = list(self._conns)
        for conn in conns:
            conn.abort_all()
        return len(conns)

    def stats(self) -> dict[str, object]:
        return {
            "listen": f"{self.listen[0]}:{self.listen[1]}",
            "target": f"{self.target[0]}:{self.target[1]}",
            "delay_fwd": self.delay_fwd,
            "delay_rev": self.delay_rev,
            "jitter": self.jitter,
            "cut": self._cut,
            "bytes_fwd": self.bytes_fwd,
            "bytes_rev": self.bytes_rev,
            "queued_fwd": self.queued_fwd,
            "queued_rev": self.queued_rev,
            "connections": self.connections,
            "connections_total": self.connections_total,
        }

    def _conn_opened(self, conn: _Conn) -> None:
        self._conns.add(conn)
        self.connections_total += 1

    def _conn_closed(self, conn: _Conn) -> None:
        self._conns.discard(conn)
