"""Link latency, the userspace proxy (`LinkProxy`): delays per direction, cut and heal, resets, counters and
back-pressure, with real sockets in this process (the link spec, proxyd and the netem probe:
tests/test_links_control.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import pytest

from harness.links import LinkProxy
from tests.link_timing import ACCURACY, EARLY_SLACK, LATE_SLACK, LATE_SLACK_MEDIAN, LO


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(asyncio.wait_for(coro, 15))  # type: ignore[arg-type]


class Target:
    """A loopback TCP server standing in for a service; `handler` defaults to echo."""

    def __init__(self, handler: Callable[..., Awaitable[None]] | None = None) -> None:
        self.handler = handler or self.echo
        self.received = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Target:
        self.server = await asyncio.start_server(self._serve, LO, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def addr(self) -> tuple[str, int]:
        return (LO, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            self.received += len(data)
            writer.write(data)
            await writer.drain()


async def round_trips(proxy: LinkProxy, count: int, size: int = 64) -> list[float]:
    reader, writer = await asyncio.open_connection(LO, proxy.port)
    out = []
    for _ in range(count):
        start = time.perf_counter()
        writer.write(b"x" * size)
        await reader.readexactly(size)
        out.append(time.perf_counter() - start)
    writer.close()
    return out


def check_rtt(rtts: list[float], expected: float) -> None:
    assert expected - EARLY_SLACK <= min(rtts) <= expected + LATE_SLACK, (min(rtts), expected)
    assert statistics.median(rtts) <= expected + LATE_SLACK_MEDIAN, (statistics.median(rtts), expected)


# --- the proxy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fwd", "rev"), [(0.03, 0.0), (0.0, 0.03), (0.01, 0.025), (0.0, 0.0)])
def test_delay_per_direction(fwd: float, rev: float) -> None:
    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr, delay_fwd=fwd, delay_rev=rev) as proxy:
            check_rtt(await round_trips(proxy, 12), fwd + rev)

    run(main())


async def timer_noise(samples: int = 10) -> float:
    """Median lateness of bare 2 ms sleeps: how much this process's scheduling alone adds right now."""
    late = []
    for _ in range(samples):
        start = time.perf_counter()
        await asyncio.sleep(0.002)
        late.append(time.perf_counter() - start - 0.002)
    return statistics.median(late)


def test_delay_accuracy_on_a_quiet_machine() -> None:
    """50 ms must come out as 50 ms +- 3 ms, judged only on an attempt the machine's load did not blur: the
    timer was punctual before and after, and the round trips agree among themselves (a constant error of the
    proxy keeps them together and still fails; another test worker's burst spreads them: 51-60 ms seen)."""

    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr, delay_fwd=0.03, delay_rev=0.02) as proxy:
            noise = 0.0
            for _ in range(6):
                before = await timer_noise()
                rtts = await round_trips(proxy, 10)
                noise = max(before, await timer_noise(), (max(rtts) - min(rtts)) / 4)
                if noise > 0.001:
                    continue
                error = statistics.median(rtts) - 0.05
                assert -EARLY_SLACK <= error <= ACCURACY, (error, rtts)
                return
        pytest.skip(f"machine too busy to judge delay accuracy (timer noise {noise * 1e3:.1f} ms)")

    run(main())


def test_one_way_delay_is_per_direction() -> None:
    """A server that pushes data on connect sees only delay_rev; a round trip would hide which way it went."""

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"%.9f" % time.monotonic())
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with Target(hello) as target, LinkProxy((LO, 0), target.addr, delay_rev=0.04) as proxy:
            one_way = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection(LO, proxy.port)
                sent = float(await reader.readexactly(len(b"%.9f" % time.monotonic())))
                one_way.append(time.monotonic() - sent)
                writer.close()
            check_rtt(one_way, 0.04)

    run(main())


def test_order_preserved_under_jitter() -> None:
    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr, delay_fwd=0.002, jitter=0.02,
                                                 seed=7) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            messages = [b"%05d;" % i for i in range(150)]
            start = time.perf_counter()
            for msg in messages:
                writer.write(msg)
                await asyncio.sleep(0.0005)  # separate chunks, each with its own jitter sample
            got = await reader.readexactly(sum(map(len, messages)))
            elapsed = time.perf_counter() - start
            writer.close()
            assert got == b"".join(messages)
            assert elapsed >= 0.002
            assert proxy.bytes_fwd == proxy.bytes_rev == len(got)

    run(main())


def test_set_changes_latency_live_on_open_connection() -> None:
    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr, delay_fwd=0.005) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)

            async def rtt() -> float:
                start = time.perf_counter()
                writer.write(b"ping")
                await reader.readexactly(4)
                return time.perf_counter() - start

            check_rtt([await rtt() for _ in range(4)], 0.005)
            proxy.set(delay_fwd=0.02, delay_rev=0.02)
            assert (proxy.delay_fwd, proxy.delay_rev, proxy.jitter) == (0.02, 0.02, 0.0)
            check_rtt([await rtt() for _ in range(4)], 0.04)
            proxy.set(delay_fwd=0.0, delay_rev=0.0)
            check_rtt([await rtt() for _ in range(4)], 0.0)
            writer.close()

    run(main())


@pytest.mark.parametrize("bad", [{"delay_fwd": -1}, {"jitter": float("nan")}, {"delay_rev": True}])
def test_set_rejects_bad_values(bad: dict[str, object]) -> None:
    proxy = LinkProxy((LO, 0), (LO, 1))
    with pytest.raises(ValueError):
        proxy.set(**bad)  # type: ignore[arg-type]
    assert (proxy.delay_fwd, proxy.delay_rev, proxy.jitter) == (0.0, 0.0, 0.0)


def test_cut_holds_everything_and_heal_delivers_in_order() -> None:
    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr, delay_fwd=0.002) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            writer.write(b"before;")
            assert await reader.readexactly(7) == b"before;"
            proxy.cut()
            assert proxy.is_cut
            messages = [b"m%03d;" % i for i in range(40)]
            for msg in messages:
                writer.write(msg)
                await asyncio.sleep(0.001)
            # A connection opened during the partition is accepted but never reaches the target.
            r2, w2 = await asyncio.open_connection(LO, proxy.port)
            w2.write(b"second")
            await asyncio.sleep(0.15)
            assert target.received == 7 and target.accepted == 1
            assert proxy.queued_fwd == sum(map(len, messages)) + 6
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.05)
            proxy.heal()
            assert await reader.readexactly(sum(map(len, messages))) == b"".join(messages)
            assert await r2.readexactly(6) == b"second"
            assert target.accepted == 2
            writer.close()
            w2.close()

    run(main())


def test_cut_holds_data_already_in_flight() -> None:
    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr, delay_fwd=0.05) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            writer.write(b"in flight")
            await asyncio.sleep(0.01)  # read by the proxy, its delivery time not reached yet
            proxy.cut()
            await asyncio.sleep(0.1)
            assert target.received == 0
            proxy.heal()
            assert await asyncio.wait_for(reader.readexactly(9), 1) == b"in flight"
            writer.close()

    run(main())


def test_cut_holds_the_reverse_direction_too() -> None:
    async def slow_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        await asyncio.sleep(0.05)
        writer.write(b"reply")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with Target(slow_reply) as target, LinkProxy((LO, 0), target.addr) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            writer.write(b"req")
            await asyncio.sleep(0.02)  # the request has passed, the reply has not been sent yet
            proxy.cut()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(5), 0.15)
            proxy.heal()
            assert await asyncio.wait_for(reader.readexactly(5), 1) == b"reply"
            writer.close()

    run(main())


def test_reset_aborts_all_connections_with_rst() -> None:
    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr) as proxy:
            pairs = [await asyncio.open_connection(LO, proxy.port) for _ in range(2)]
            for reader, writer in pairs:
                writer.write(b"hi")
                assert await reader.readexactly(2) == b"hi"
            assert proxy.connections == 2
            assert proxy.reset() == 2
            for reader, _ in pairs:
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(reader.read(1), 1)
            for _, writer in pairs:
                writer.close()
            await asyncio.sleep(0.02)
            assert proxy.connections == 0 and proxy.connections_total == 2
            check_rtt(await round_trips(proxy, 2), 0.0)  # the link itself still works

    run(main())


def test_counters_count_exact_payload_bytes_each_way() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(b"ok:" + str(len(line)).encode() + b"\n")

    async def main() -> None:
        async with Target(answer) as target, LinkProxy((LO, 0), target.addr, delay_rev=0.001) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            sent = received = 0
            for size in (1, 10, 100, 1000, 10000):
                line = b"a" * size + b"\n"
                writer.write(line)
                reply = await reader.readline()
                sent += len(line)
                received += len(reply)
            writer.close()
            await asyncio.sleep(0.02)
            assert (proxy.bytes_fwd, proxy.bytes_rev) == (sent, received)
            assert proxy.connections_total == 1

    run(main())


def test_half_close_arrives_after_the_delayed_data() -> None:
    async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's FIN
        writer.write(data.upper())
        await writer.drain()

    async def main() -> None:
        async with Target(upper) as target, LinkProxy((LO, 0), target.addr, delay_fwd=0.02,
                                                      delay_rev=0.01) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            start = time.perf_counter()
            writer.write(b"hello ")
            writer.write(b"world")
            writer.write_eof()
            assert await reader.read() == b"HELLO WORLD"  # read() returns at EOF: both FINs passed
            assert time.perf_counter() - start >= 0.03 - EARLY_SLACK
            writer.close()
            await asyncio.sleep(0.02)
            assert proxy.connections == 0

    run(main())


def test_a_reset_from_the_target_follows_its_data_after_the_delay() -> None:
    async def say_and_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"last words")
        await writer.drain()
        await asyncio.sleep(0.005)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async def main() -> None:
        async with Target(say_and_reset) as target, LinkProxy((LO, 0), target.addr, delay_rev=0.03) as proxy:
            start = time.perf_counter()
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            assert await reader.readexactly(10) == b"last words"
            assert time.perf_counter() - start >= 0.03 - EARLY_SLACK
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), 1)
            writer.close()

    run(main())


def test_http_keep_alive_through_the_proxy() -> None:
    from aiohttp import ClientSession, TCPConnector, web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"n": int(request.query["n"])})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LO, 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with LinkProxy((LO, 0), (LO, port), delay_fwd=0.01, delay_rev=0.005) as proxy, \
                    ClientSession(connector=TCPConnector(limit=1)) as session:
                for n in range(5):
                    start = time.perf_counter()
                    async with session.get(f"http://{LO}:{proxy.port}/?n={n}") as resp:
                        assert (await resp.json())["n"] == n
                    assert time.perf_counter() - start >= 0.015 - EARLY_SLACK
                assert proxy.connections_total == 1  # one keep-alive connection carried every request
        finally:
            await runner.cleanup()

    run(main())


def test_target_down_gives_the_client_a_reset() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind((LO, 0))
            dead_port = s.getsockname()[1]  # bound, never listening: connections are refused
            async with LinkProxy((LO, 0), (LO, dead_port)) as proxy:
                reader, writer = await asyncio.open_connection(LO, proxy.port)
                writer.write(b"anyone?")
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(reader.read(1), 1)
                writer.close()
                await asyncio.sleep(0.02)
                assert proxy.connections == 0

    run(main())


def test_two_megabyte_payload_passes_intact() -> None:
    payload = os.urandom(2 * 1024 * 1024)

    async def main() -> None:
        async with Target() as target, LinkProxy((LO, 0), target.addr, delay_fwd=0.005, delay_rev=0.005,
                                                 max_queued=256 * 1024) as proxy:
            reader, writer = await asyncio.open_connection(LO, proxy.port)
            peak = 0

            async def send() -> None:
                writer.write(payload)
                await writer.drain()

            sender = asyncio.create_task(send())
            got = bytearray()
            while len(got) < len(payload):
                got += await reader.read(1 << 16)
                peak = max(peak, proxy.queued_fwd, proxy.queued_rev)
            await sender
            writer.close()
            assert bytes(got) == payload
            assert proxy.bytes_fwd == proxy.bytes_rev == len(payload)
            assert peak <= 256 * 1024 + 512 * 1024  # the limit plus at most a couple of socket reads

    run(main())


def test_backpressure_stops_reading_a_source_whose_destination_is_stuck() -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        async with Target(never_reads) as target, LinkProxy((LO, 0), target.addr, max_queued=1 << 20) as proxy:
            _, writer = await asyncio.open_connection(LO, proxy.port)
            chunk = b"z" * (1 << 20)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    while True:  # drain() blocks for good once the proxy stops reading
                        writer.write(chunk)
                        await writer.drain()
            assert proxy.queued_fwd <= (1 << 20) + (256 << 10)
            proxy.reset()
            writer.close()

    run(main())
