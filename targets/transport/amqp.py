"""AMQP 0-9-1 through aio-pika, in SONATA's shape (protocol.bus): one topic exchange, a queue per subscriber
and plane, a routing key per kind of message, and the RPC pattern for replies.

One connection per plane (op, hb, state), each to the address the spec names for it (the broker, or the
latency proxy in front of it): bytes and delay per plane stay attributable, by the proxy and the capture,
as they are with three HTTP ports.

`queues: transient` is SONATA's way: non-durable queues, transient messages, automatic acks, no publisher
confirms. `durable`: durable queues, persistent messages, publisher confirms, and a message is acknowledged
only after its handler has done the work, so a broker crash (restarted on its data) or a consumer crash
redelivers what was not done.

When the broker goes away each connection reconnects by itself (aio-pika's robust connection, here with a
doubling back-off from 50 ms to 1 s), re-declares its queues and consumers and resumes; the service never
exits for it. It records `broker_lost` and `broker_back` per plane; calls waiting for a reply on a lost
connection fail at once with `BusUnavailable` (an OSError, as a dead HTTP peer's connection is), so every
caller's retry logic applies unchanged. A message that is not JSON, lacks a field, is bigger than the
largest message of the experiment or names no route is rejected without requeue (a transient queue has
already dropped it) and recorded as `bad_message`; the sender gets the status in the reply.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustExchange
from aio_pika.robust_connection import RobustConnection
from aiohttp import web

from protocol.bus import EXCHANGE, KEYS, queue_name, reply_queue, routing_key
from protocol.events import EventSink
from protocol.messages import padded
from protocol.spec import ServiceSpec, address
from targets.spec import Params
from targets.transport import Handler, install

BACKOFF_FIRST, BACKOFF_MAX = 0.05, 1.0  # wall seconds between reconnection attempts
# what a publish or a reply wait raises when the broker is gone: all of it is "the bus is unavailable"
FAILURES = (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)


class BusUnavailable(ConnectionError):
    """No connection to the broker on this plane right now (it crashed, froze, or is cut off)."""


class BusRefused(OSError):
    """The receiver answered 4xx or 5xx: what an HTTP error status is on the other transport."""


class BackoffConnection(RobustConnection):
    """A robust connection whose pause between reconnection attempts doubles up to BACKOFF_MAX, and starts
    again from BACKOFF_FIRST once it is connected."""

    _interval = BACKOFF_FIRST

    @property  # type: ignore[override]
    def reconnect_interval(self) -> float:
        interval, self._interval = self._interval, min(BACKOFF_MAX, self._interval * 2)
        return interval

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._interval = BACKOFF_FIRST


class BusRequest:
    """A delivered message as a handler reads it: what an aiohttp request offers the handlers of `targets`."""

    transport = None  # no HTTP connection behind it (membership's /hb-now marks look for one)

    def __init__(self, path: str, body: bytes) -> None:
        self.path, self.body = path, body

    async def read(self) -> bytes:
        return self.body


@dataclass
class Plane:
    """One plane's connection, channel, exchange, reply queue and the calls waiting for a reply."""

    name: str
    connection: RobustConnection
    channel: AbstractRobustChannel
    exchange: AbstractRobustExchange
    reply_to: str
    pending: dict[str, asyncio.Future[tuple[int, bytes]]] = field(default_factory=dict)
    up: bool = True
    lost_at: float = 0.0


class Amqp:
    """The bus transport of one service instance (targets.transport.Transport)."""

    def __init__(self, spec: ServiceSpec, sink: EventSink) -> None:
        self.spec, self.sink = spec, sink
        self.durable = spec.bus.get("queues", "transient") == "durable"
        self.max_message = Params(spec.z).max_message
        self.planes: dict[str, Plane] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- connections ---------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """One connection per plane; waits (retrying with the back-off) until the broker accepts each."""
        for plane, addr in self.spec.bus["connect"].items():
            host, port = address(addr)
            connection: RobustConnection = await aio_pika.connect_robust(  # type: ignore[assignment]
                host=host, port=port, connection_class=BackoffConnection, fail_fast=False,
                client_properties={"connection_name": f"{self.spec.id}.{plane}"})
            channel: AbstractRobustChannel = await connection.channel(  # type: ignore[assignment]
                publisher_confirms=self.durable)
            exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=self.durable)
            reply_to = reply_queue(self.spec.id, plane)
            state = Plane(plane, connection, channel, exchange, reply_to)  # type: ignore[arg-type]
            replies = await channel.declare_queue(reply_to, exclusive=True, durable=False)
            await replies.consume(lambda m, s=state: self._on_reply(s, m), no_ack=True)  # type: ignore[misc]
            connection.close_callbacks.add(lambda _c, exc, s=state: self._lost(s, exc))
            connection.reconnect_callbacks.add(lambda _c, s=state: self._back(s))
            self.planes[plane] = state

    def _lost(self, plane: Plane, exc: BaseException | None) -> None:
        if not plane.up:
            return
        plane.up, plane.lost_at = False, time.monotonic()
        for fut in plane.pending.values():
            if not fut.done():
                fut.set_exception(BusUnavailable(f"broker connection lost ({plane.name})"))
        self.sink.emit("broker_lost", plane=plane.name, error=type(exc).__name__ if exc else "closed")

    def _back(self, plane: Plane) -> None:
        plane.up = True
        plane.connection.reconnect_interval = BACKOFF_FIRST  # the next loss backs off from the start again
        self.sink.emit("broker_back", plane=plane.name, down_for=time.monotonic() - plane.lost_at)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for plane in self.planes.values():
            plane.up = False  # a deliberate close is no broker_lost
            await plane.connection.close()

    # --- receiving -------------------------------------------------------------------------------------------
    def _queue_of(self, plane: str, path: str) -> tuple[str, str]:
        """(queue, routing-key suffix): a worker's calls come from the queue its replicas share."""
        if path == "/task" and self.spec.task is not None:
            return f"task.{self.spec.task}.{plane}", f"task.{self.spec.task}"
        return queue_name(self.spec.id, plane), self.spec.id

    async def serve(self, routes: list[tuple[str, str, str, Handler]]) -> None:
        by_plane: dict[str, dict[str, Handler]] = {}
        for plane, _method, path, handler in routes:
            if path in KEYS and KEYS[path][0] == plane and plane in self.planes:
                by_plane.setdefault(plane, {})[path] = handler
        for plane, handlers in by_plane.items():
            state = self.planes[plane]
            queues = {}
            for path in handlers:
                name, suffix = self._queue_of(plane, path)
                queues[name] = await state.channel.declare_queue(name, durable=self.durable)
                await queues[name].bind(state.exchange, routing_key(path, suffix))
            for queue in queues.values():
                await queue.consume(lambda m, s=state, h=handlers: self._deliver(s, h, m),  # type: ignore[misc]
                                    no_ack=not self.durable)

    async def _deliver(self, plane: Plane, handlers: dict[str, Handler], message: AbstractIncomingMessage) -> None:
        """Each message in its own task, so a long task call does not hold the plane's other messages."""
        task = asyncio.create_task(self._handle(plane, handlers, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, plane: Plane, handlers: dict[str, Handler], message: AbstractIncomingMessage) -> None:
        path = message.type or ""
        status, reply = await self._answer(plane.name, handlers.get(path), path, message)
        try:
            if message.reply_to:
                await plane.channel.default_exchange.publish(
                    aio_pika.Message(reply, correlation_id=message.correlation_id, type=str(status),
                                     content_type="application/json"), routing_key=message.reply_to)
            if self.durable:  # acknowledged once the work is done; a refused message is not requeued
                await (message.ack() if status < 400 else message.reject(requeue=False))
        except FAILURES:
            pass  # the broker went away meanwhile: a durable queue redelivers, the sender's wait fails

    async def _answer(self, plane: str, handler: Handler | None, path: str, message: AbstractIncomingMessage
                      ) -> tuple[int, bytes]:
        """(status, reply body) of one message, as `targets.http.guarded` answers an HTTP request."""
        if handler is None:
            status, reason = 404, f"no route for {path!r} on the {plane} plane"
        elif len(message.body) > self.max_message:
            status, reason = 413, f"message of {len(message.body)} bytes (at most {self.max_message})"
        else:
            try:
                response = await handler(BusRequest(path, message.body))  # type: ignore[arg-type]
                body = getattr(response, "body", b"")
                return response.status, body if isinstance(body, bytes) else b""
            except web.HTTPException as exc:
                status, reason = exc.status, exc.text or ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not take the service down: answer and record it
                self.sink.emit("error", plane=plane, path=path, error=repr(exc))
                return 500, b"internal error"
        if 400 <= status < 500:
            self.sink.emit("bad_message", plane=plane, path=path, status=status, reason=reason, transport="amqp")
        return status, reason.encode()

    # --- sending ---------------------------------------------------------------------------------------------
    async def post(self, addr: str, path: str, body: dict[str, Any], size: int, timeout: float
                   ) -> tuple[dict[str, Any], int, int]:
        plane = self.planes.get(KEYS[path][0]) if path in KEYS else None
        if plane is None:
            raise BusUnavailable(f"no bus route for {path}")
        if not plane.up:
            raise BusUnavailable(f"broker connection lost ({plane.name})")
        data = padded(body, size)
        corr = uuid.uuid4().hex
        reply: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        plane.pending[corr] = reply
        message = aio_pika.Message(
            data, correlation_id=corr, reply_to=plane.reply_to, type=path, content_type="application/json",
            expiration=max(0.001, timeout),  # the sender stops waiting then: the message is no use after it
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if self.durable else aio_pika.DeliveryMode.NOT_PERSISTENT)
        try:
            async with asyncio.timeout(timeout):
                await plane.exchange.publish(message, routing_key=routing_key(path, addr))
                status, raw = await reply
        except BusUnavailable:
            raise
        except FAILURES as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from None
        finally:
            plane.pending.pop(corr, None)
        if status >= 400:
            raise BusRefused(f"{status}: {raw[:200].decode(errors='replace')}")
        return (json.loads(raw) if raw else {}), len(data), len(raw)

    async def _on_reply(self, plane: Plane, message: AbstractIncomingMessage) -> None:
        fut = plane.pending.get(message.correlation_id or "")
        if fut is not None and not fut.done():  # a reply nobody waits for any more (timed out, redelivered)
            fut.set_result((int(message.type or 200), message.body))


async def open_bus(spec: ServiceSpec, sink: EventSink) -> Amqp:
    """Connect every plane to the broker and make the bus this process's transport."""
    bus = Amqp(spec, sink)
    await bus.connect()
    install(bus)
    return bus
