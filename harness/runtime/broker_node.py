"""What a run's RabbitMQ node is, on any runtime: the server it runs, its configuration, how to tell it is
ready, how to read why it failed, and what a testbed and the broker faults use of it (`Broker`).

A module of its own, importing no runtime, so that both the local broker (harness.runtime.broker) and the
docker family (the bus image, the compose entry, the broker container) read one description of the node
without importing each other (issue 21: they once formed an import cycle of five modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from pathlib import Path
from typing import Protocol

from harness.errors import UserError

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # Debian's rabbitmq-server package
BROKER_DATA_ENV = "MANOBENCH_BROKER_DATA"  # a broker's data directory: removed with its leftover processes
CONFIG = "loopback_users = none\ndisk_free_limit.absolute = 1MB\n"  # guest from any address; tiny disks work
IN_CONTAINER = {  # the broker container's environment: Debian's defaults are the container's own
    "RABBITMQ_NODENAME": "rabbit@localhost", "HOME": "/var/lib/rabbitmq", "RABBITMQ_LOGS": "-"}


class BrokerError(UserError):
    """The broker could not start: one line with the first error of its log, and where the log is."""


class Broker(Protocol):
    """What a testbed and the broker faults use of a run's broker, on either runtime."""

    host: str
    port: int
    data: Path
    started_in: float

    @property
    def address(self) -> str: ...
    async def start(self, timeout: float = ...) -> None: ...
    def pid(self) -> int: ...
    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    async def down(self, grace: float = ...) -> None: ...


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def accepts_amqp(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the broker completes an AMQP connection (not merely a TCP accept: the listener opens early)."""
    import aio_pika

    try:  # a plain TCP connect first: aio-pika logs every refused attempt
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
    except (OSError, TimeoutError):
        return False
    try:
        connection = await asyncio.wait_for(aio_pika.connect(host=host, port=port), timeout)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, asyncio.CancelledError, RuntimeError):
        return False
    await connection.close()
    return True


ERROR_LINE = re.compile(r"^\S+ \S+ \[error\] <[\d.]+> (?P<what>\S.*)$")  # 2026-... [error] <0.146.0> why


def first_error(logs: list[Path], width: int = 240) -> str:
    """The first Erlang error line of a node's logs (its own log, then its stdout), as one line of at most
    `width` characters: e.g. "Failed to create cookie file '...': enoent". Why not the whole log: the reason is
    its first error, and the hundreds of lines after it are the supervisors' reports of the same thing."""
    for log in logs:
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            found = ERROR_LINE.match(line.strip())
            if found:
                return _shorten(found["what"], width)
        for i, line in enumerate(lines):  # no logger yet: the boot's own report ("BOOT FAILED ... error:...")
            if line.strip() == "BOOT FAILED":
                rest = [x.strip() for x in lines[i + 1:] if x.strip() and not x.startswith("=")]
                if rest:
                    return _shorten(" ".join(rest[:2]), width)
    for log in reversed(logs):  # nothing recognised: its last words
        with contextlib.suppress(OSError):
            last = [x.strip() for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
            if last:
                return _shorten(last[-1], width)
    return "it wrote no log"


def _shorten(text: str, width: int) -> str:
    """Keep both ends of a long line: an Erlang reason often ends with its point (`eaddrinuse`)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = width * 2 // 3
    return f"{text[:head]} ... {text[-(width - head - 5):]}"
