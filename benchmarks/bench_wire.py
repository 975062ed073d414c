"""Does the wire capture keep up? Push traffic over loopback at full speed and compare captured with sent bytes.

    python benchmarks/bench_wire.py [--mb 200] [--seconds 3] [--senders 2] [--mode auto|ring|recv]

Two phases, each with its own capture process on a random 127.a.b.0/24 block:
  bulk   one connection, `--mb` MB client -> server in 1 MiB writes (big GSO segments, few packets);
  small  `--senders` processes, each streaming 100-byte writes with TCP_NODELAY for `--seconds` (one packet per
         write: the packet-rate worst case).
For each: payload bytes the application sent, what TCP itself sent (tcpi_bytes_sent: the same plus any
retransmissions, which are real bytes on the wire) and what the capture counted on the phase's flows; kernel
drops; packets/s; and the capture process's CPU seconds during the phase (psutil). Exits 1 if the captured
bytes differ from TCP's own count without kernel drops to explain it; prints a note and exits 0 where no
capture is possible.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.measure.wire import Flow, WireCapture, probe

Key = tuple[str, int, str, int]


def _pair(server_ip: str, client_ip: str) -> tuple[socket.socket, socket.socket]:
    with socket.socket() as lst:
        lst.bind((server_ip, 0))
        lst.listen(1)
        client = socket.create_connection(lst.getsockname(), source_address=(client_ip, 0))
        server, _ = lst.accept()
    return client, server


def _key(sock: socket.socket) -> Key:
    return (*sock.getsockname(), *sock.getpeername())


def _drain(sock: socket.socket, total: list[int]) -> None:
    buf = bytearray(4 << 20)
    while n := sock.recv_into(buf):
        total[0] += n


def _stream(client: socket.socket, server: socket.socket, send: object) -> int:
    """Run `send(client)` while a thread reads the server side; close cleanly; return bytes received."""
    got = [0]
    reader = threading.Thread(target=_drain, args=(server, got))
    reader.start()
    send(client)  # type: ignore[operator]
    client.shutdown(socket.SHUT_WR)
    reader.join()
    return got[0]


def _small_worker(server_ip: str, client_ip: str, seconds: float, go: mp.Event, out: mp.Queue) -> None:
    client, server = _pair(server_ip, client_ip)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = [0]

    def send(sock: socket.socket) -> None:
        msg = b"m" * 100
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(256):
                sock.sendall(msg)
            sent[0] += 256 * 100

    go.wait()
    got = _stream(client, server, send)
    time.sleep(0.05)  # the last ACKs
    out.put((_key(client), sent[0], got, _tcp_sent(client)))
    client.close()
    server.close()


def _tcp_sent(sock: socket.socket) -> tuple[int, int]:
    """(tcpi_bytes_sent, tcpi_bytes_retrans) of struct tcp_info (Linux >= 5.5): payload bytes TCP put on the wire."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return struct.unpack_from("QQ", raw, 200) if len(raw) >= 216 else (0, 0)


def _capture_cpu(cap: WireCapture) -> float:
    """CPU seconds the capture process has used so far (psutil; the sidecar has the same at each write)."""
    t = psutil.Process(cap.pid).cpu_times()
    return t.user + t.system


def _report(name: str, cap: WireCapture, flows: list[Flow], sent: dict[Key, tuple[int, int, int]], wall: float,
            cpu: float) -> bool:
    """sent: 4-tuple -> (application bytes, TCP's bytes_sent, TCP's bytes_retrans)."""
    by_key = {f.key: f for f in flows}
    mine = [by_key[k] for k in sent if k in by_key]
    captured = sum(f.payload_bytes for f in mine)
    app, tcp, retrans = (sum(v[i] for v in sent.values()) for i in range(3))
    packets = sum(f.packets for f in flows)  # both directions (the ACKs too): what the capture had to handle
    stats = cap.stats()
    drops = stats.get("kernel_drops", 0)
    exact = captured == tcp
    print(f"{name:5}  app sent {app / 1e6:8.3f} MB, TCP sent {tcp / 1e6:8.3f} MB (retransmitted {retrans} B), "
          f"captured {captured / 1e6:8.3f} MB: {'exact' if exact else f'diff {captured - tcp:+d} B'}; "
          f"kernel drops {drops}" + (f", max ring lag {stats['max_lag_seconds'] * 1000:.0f} ms"
                                     if stats.get("mode") == "ring" else " (recvfrom)"))
    print(f"       {packets} packets in {wall:.2f} s = {packets / wall:,.0f} packets/s, {app / wall / 1e6:,.0f} MB/s; "
          f"capture CPU {cpu:.2f} s ({cpu / wall:.0%} of one core"
          + (f", {packets / cpu:,.0f} packets per CPU-second)" if cpu >= 0.05 else ")")  # 10 ms CPU clock
          + f"; {stats.get('cpu_seconds', 0):.2f} s in all")
    return exact or drops > 0


def bulk(block: str, tmp: Path, mb: int, mode: str) -> bool:
    cap = WireCapture(f"{block}.0/24", tmp / "bulk.csv", interval=1.0, mode=mode).start()
    client, server = _pair(f"{block}.1", f"{block}.2")
    chunk = b"b" * (1 << 20)

    def send(sock: socket.socket) -> None:
        for _ in range(mb):
            sock.sendall(chunk)

    cpu0, t0 = _capture_cpu(cap), time.monotonic()
    got = _stream(client, server, send)
    wall = time.monotonic() - t0
    key = _key(client)
    assert got == mb << 20, (got, mb << 20)
    time.sleep(0.05)
    tcp = _tcp_sent(client)
    flows = cap.stop()
    cpu = max(0.0, cap.stats()["cpu_seconds"] - cpu0)  # up to the final write, so the last blocks are in
    client.close()
    server.close()
    return _report("bulk", cap, flows, {key: (mb << 20, *tcp)}, wall, cpu)


def small(block: str, tmp: Path, seconds: float, senders: int, mode: str) -> bool:
    cap = WireCapture(f"{block}.0/24", tmp / "small.csv", interval=1.0, mode=mode).start()
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_small_worker, args=(f"{block}.{10 + i}", f"{block}.{100 + i}", seconds, go, q))
             for i in range(senders)]
    for p in procs:
        p.start()
    time.sleep(0.3)  # let the workers connect
    cpu0, t0 = _capture_cpu(cap), time.monotonic()
    go.set()
    results = [q.get(timeout=seconds + 30) for _ in procs]
    for p in procs:
        p.join()
    wall = time.monotonic() - t0
    flows = cap.stop()
    cpu = max(0.0, cap.stats()["cpu_seconds"] - cpu0)
    for _, sent, got, _tcp in results:
        assert sent == got, (sent, got)
    return _report("small", cap, flows, {k: (sent, *tcp) for k, sent, _, tcp in results}, wall, cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="bulk phase size, MiB")
    ap.add_argument("--seconds", type=float, default=3.0, help="small-message phase duration")
    ap.add_argument("--senders", type=int, default=2, help="small-message sender processes")
    ap.add_argument("--mode", choices=("auto", "ring", "recv"), default="auto", help="the capture's reader")
    args = ap.parse_args()
    ok, why = probe()
    if not ok:
        print(f"wire capture unavailable: {why}; nothing to measure")
        return 0
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    tmp = Path(tempfile.mkdtemp(prefix="wire-"))
    print(f"block {block}.0/24 on lo, {psutil.cpu_count()} CPUs")
    try:
        good = bulk(block, tmp, args.mb, args.mode)
        good = small(block, tmp, args.seconds, args.senders, args.mode) and good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
