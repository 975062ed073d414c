"""wire: bytes counted on the wire per TCP 4-tuple, sniffed behind a kernel BPF filter, for one run.

The services count their own bytes; this counts what the kernel actually carried, to cross-check those counts
and to attribute traffic to links (a proxy's listen address) and planes (a service's op/heartbeat/state port).

`WireCapture` (start/stop or a context manager) runs the capture as its own process, so the harness's GIL never
slows it down and it never slows the harness, and tells what it saw (`note`, `stats()`, `health()`: kernel
drops are never hidden). The rest is in five modules, whose names callers use are re-exported here:

  * `harness.measure.capture_process`: the process (``python -m harness.measure.capture_process``, or
    ``python -m harness.measure.wire``), its counting loop and counting rules;
  * `harness.measure.capture_socket`: the AF_PACKET socket, its BPF filter (`bpf_expression`,
    `bpf_program`), `probe` and the capture's errors;
  * `harness.measure.frames`: the two readers, `parse_frame` (``raw``, struct) and `parse_frame_layers`
    (``layers``, scapy's dissection, the reference);
  * `harness.history.flows`: wire.csv, the flow file (`Flow`, `read_flows`, `write_flows`, `stats_path`), with
    the run record that reads it; `harness.measure.attribution`: flows summed per link (`by_endpoint`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from harness.history.flows import CSV_COLUMNS, Flow, read_flows, stats_path, write_flows
from harness.measure.attribution import by_endpoint, parse_endpoint
from harness.measure.capture_process import main
from harness.measure.capture_socket import (
    ARPHRD_ETHER,
    ARPHRD_LOOPBACK,
    DEFAULT_BUFFER,
    CaptureError,
    CaptureUnavailable,
    FilterError,
    bpf_expression,
    bpf_program,
    probe,
)
from harness.measure.frames import READERS, parse_frame, parse_frame_layers

__all__ = [
    "ARPHRD_ETHER",
    "ARPHRD_LOOPBACK",
    "CSV_COLUMNS",
    "DEFAULT_BUFFER",
    "READERS",
    "CaptureError",
    "CaptureUnavailable",
    "FilterError",
    "Flow",
    "WireCapture",
    "bpf_expression",
    "bpf_program",
    "by_endpoint",
    "main",
    "parse_endpoint",
    "parse_frame",
    "parse_frame_layers",
    "probe",
    "read_flows",
    "stats_path",
    "write_flows",
]

_ROOT = str(Path(__file__).resolve().parents[2])


class WireCapture:
    """Run the capture process for one network block on one interface.

        with WireCapture("127.12.34.0/24", run_dir / "wire.csv") as cap:
            ...                     # traffic
        flows = cap.flows           # or: cap.start(); ...; flows = cap.stop()

    `start()` raises CaptureUnavailable (with the reason) when no capture can be had here; `stop()` raises
    CaptureError if the capture process failed on the way. `note` says what captures (for the run's record),
    `health()` whether it saw everything (kernel drops, never hidden).
    """

    def __init__(self, net: str, out: str | Path, *, iface: str = "lo", interval: float = 1.0,
                 reader: str = "raw", buffer: int = DEFAULT_BUFFER, kernel_filter: bool = True,
                 ready_timeout: float = 10.0, stop_timeout: float = 5.0, env: Mapping[str, str] | None = None,
                 python: str | None = None) -> None:
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, not {reader!r}")
        self.net = str(ipaddress.IPv4Network(net, strict=False))
        self.out = Path(out)
        self.stats_file = stats_path(self.out)
        self.iface = iface
        self.interval = interval
        self.reader = reader
        self.buffer = buffer
        self.kernel_filter = kernel_filter
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.env = dict(env or {})
        self.python = python or sys.executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.flows: list[Flow] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def note(self) -> str:
        """One line for the run's record (config.yaml's wire_capture): what counts the packets, and how."""
        where = "lo" if self.iface == "lo" else f"the run's bridge {self.iface} (promiscuous)"
        bpf = f"kernel BPF '{bpf_expression(self.net, self.iface == 'lo')}'" if self.kernel_filter else "no BPF"
        how = ("fixed IPv4/TCP headers read from the raw frames" if self.reader == "raw"
               else "scapy's Ether/IP/TCP dissection")
        return f"AF_PACKET socket on {where}, {bpf} (compiled by libpcap), {how}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> WireCapture:
        if self.proc is not None:
            raise CaptureError("capture already started")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for stale in (self.out, self.stats_file):
            stale.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        argv = [self.python, "-m", "harness.measure.capture_process", "--iface", self.iface, "--net", self.net,
                "--out", str(self.out), "--stats", str(self.stats_file), "--interval", repr(self.interval),
                "--reader", self.reader, "--buffer", str(self.buffer), "--parent", str(os.getpid())]
        if not self.kernel_filter:
            argv.append("--no-kernel-filter")
        self._stderr = tempfile.TemporaryFile(prefix="wire-")  # noqa: SIM115 -- lives as long as the process
        self.flows = None
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self._stderr, env=env)
        except OSError as e:
            self._close()
            raise CaptureUnavailable(f"cannot start the capture process: {e}") from e
        line = self._first_line()
        if line == "ready":
            return self
        proc = self.proc
        if line is None:  # timed out
            proc.kill()
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        err = self._stderr_tail()
        self._close()
        self.proc = None
        if line is None:
            raise CaptureUnavailable(f"capture process not ready after {self.ready_timeout:g}s")
        if line.startswith("unavailable: "):
            raise CaptureUnavailable(line.removeprefix("unavailable: "))
        raise CaptureUnavailable(f"capture process exited with code {rc} before it was ready: {err or line!r}")

    def _first_line(self) -> str | None:
        """The first stdout line ('' on EOF), or None if none came within ready_timeout."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace").strip()

    def _stderr_tail(self, limit: int = 2000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-limit:]

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def snapshot(self) -> list[Flow]:
        """The flows as of the capture's last periodic write (it need not be stopped)."""
        return read_flows(self.out) if self.out.exists() else []

    def stats(self) -> dict[str, int | float | str | bool | None]:
        """The JSON sidecar: kernel_packets, kernel_drops, packets_counted, peak_packets_per_second, ... (every
        value a JSON scalar: harness.measure.capture_process writes it)."""
        return json.loads(self.stats_file.read_text()) if self.stats_file.exists() else {}

    def health(self) -> str:
        """One line on whether the capture saw every packet: 'complete: ...' or 'INCOMPLETE: ...' (drops)."""
        s = self.stats()
        if not s:
            return "no capture statistics"
        packets, drops = _number(s, "kernel_packets"), _number(s, "kernel_drops")
        rates = (f"peak {_number(s, 'peak_packets_per_second'):,} packets/s, longest wait in the socket "
                 f"{_number(s, 'max_lag_seconds') * 1000:.0f} ms, reader {s.get('reader')}")
        if drops:
            return (f"INCOMPLETE: the kernel dropped {drops:,} of {packets:,} packets (the {s.get('reader')} "
                    f"reader did not keep up; wire bytes are short); {rates}")
        return f"complete: {packets:,} packets, 0 kernel drops; {rates}"

    def stop(self) -> list[Flow]:
        """SIGTERM the capture, wait for its final write, and return the flows (also kept as `.flows`)."""
        if self.proc is None:
            if self.flows is not None:
                return self.flows
            raise CaptureError("capture not started")
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        err = self._stderr_tail()
        self._close()
        self.proc = None
        if rc is None:
            raise CaptureError(f"capture process did not exit within {self.stop_timeout:g}s of SIGTERM; killed")
        if rc != 0:
            raise CaptureError(f"capture process exited with code {rc}: {err}")
        if not self.stats().get("final"):
            raise CaptureError("capture process exited without its final write")
        self.flows = read_flows(self.out)
        return self.flows

    def __enter__(self) -> WireCapture:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is None:
            return
        if exc_type is None:
            self.stop()
        else:
            with contextlib.suppress(CaptureError):
                self.stop()


if __name__ == "__main__":  # the capture process's entry, as it was before it had its own module
    sys.exit(main())


def _number(stats: dict[str, int | float | str | bool | None], key: str) -> int | float:
    """A count or a time of the capture's sidecar, 0 where it has none (an int stays an int: it is printed
    with thousands separators)."""
    value = stats.get(key, 0)
    return value if isinstance(value, int | float) else 0
