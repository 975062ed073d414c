"""How faithful and how cheap is the userspace latency proxy? Achieved vs configured delay, throughput, CPU.

Runs proxyd as its own process (as a deployment does) with two links: one to an echo server for round trips,
one to a sink for throughput. Delays are configured on the forward direction only, so a round trip's excess
over the configured delay is the proxy's error plus the loopback round trip (shown as the 0 ms row).

    python benchmarks/bench_proxy.py
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.links import LinkSpec, dump_specs, launch_proxyd

LO = "127.0.0.1"
ROUND_TRIPS = 200
DELAYS = (0.0, 0.010, 0.050)
THROUGHPUT_MB = 256
CHUNK = 1 << 20


def serve(handler) -> int:  # type: ignore[no-untyped-def]
    """A blocking server on a free loopback port, one thread per connection."""
    srv = socket.create_server((LO, 0))

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


def echo(conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):
        while data := conn.recv(65536):
            conn.sendall(data)


class Sink:
    def __init__(self) -> None:
        self.received = 0
        self.done = threading.Event()
        self.expect = 0

    def __call__(self, conn: socket.socket) -> None:
        buf = bytearray(CHUNK)
        with conn, contextlib.suppress(OSError):  # proxyd's exit resets what is still open
            while n := conn.recv_into(buf):
                self.received += n
                if self.received >= self.expect:
                    self.done.set()


def round_trips(port: int, count: int) -> list[float]:
    out = []
    with socket.create_connection((LO, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(sock.recv(64 - got))
            out.append(time.perf_counter() - start)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    echo_port = serve(echo)
    sink = Sink()
    sink_port = serve(sink)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        spec = Path(tmp) / "links.json"
        dump_specs([LinkSpec("echo", (LO, 0), (LO, echo_port)), LinkSpec("sink", (LO, 0), (LO, sink_port))], spec)
        proc, ctl, info = launch_proxyd(spec, ready_file=Path(tmp) / "ready.json")
        try:
            links = info["links"]
            assert isinstance(links, dict)
            ports = {name: int(addr.rpartition(":")[2]) for name, addr in links.items()}
            cpu = psutil.Process(proc.pid)

            print(f"round trips: {ROUND_TRIPS} x 64 B each, delay on the forward direction only")
            print(f"{'configured':>10} {'mean':>9} {'p50':>9} {'p99':>9} {'max':>9} {'mean excess':>12}")
            for delay in DELAYS:
                ctl.set("echo", delay_fwd=delay)
                rtts = round_trips(ports["echo"], ROUND_TRIPS)
                mean = statistics.mean(rtts)
                print(f"{delay * 1e3:>8.1f}ms {mean * 1e3:>7.2f}ms {pct(rtts, 0.5) * 1e3:>7.2f}ms "
                      f"{pct(rtts, 0.99) * 1e3:>7.2f}ms {max(rtts) * 1e3:>7.2f}ms {(mean - delay) * 1e3:>+10.2f}ms")

            print(f"\nthroughput: {THROUGHPUT_MB} MB one way through one link")
            print(f"{'delay':>8} {'MB/s':>9} {'proxy CPU ms/MB':>16}")
            for delay in (0.0, 0.010):
                ctl.set("sink", delay_fwd=delay)
                sink.received, sink.expect = 0, THROUGHPUT_MB * CHUNK
                sink.done.clear()
                payload = b"\0" * CHUNK
                before = sum(cpu.cpu_times()[:2])
                start = time.perf_counter()
                with socket.create_connection((LO, ports["sink"])) as sock:
                    for _ in range(THROUGHPUT_MB):
                        sock.sendall(payload)
                    if not sink.done.wait(30):
                        print("sink did not receive everything", file=sys.stderr)
                        return 1
                elapsed = time.perf_counter() - start
                used = sum(cpu.cpu_times()[:2]) - before
                print(f"{delay * 1e3:>6.1f}ms {THROUGHPUT_MB / elapsed:>9.0f} {used * 1e3 / THROUGHPUT_MB:>16.2f}")
            stats = ctl.link("sink")
            print(f"\nsink link counters: bytes_fwd={stats['bytes_fwd']} connections_total="
                  f"{stats['connections_total']}")
        finally:
            proc.terminate()
            proc.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
