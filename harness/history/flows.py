"""wire.csv, the packet capture's flows: one row per direction of each TCP connection, as counted on the wire.

The format lives here, with the run record, rather than beside the capture (`harness.measure.wire`): the record
(`harness.history.record`) reads wire.csv back, and the history floor imports nothing of measure. The capture
process writes the file with `write_flows`; everything else reads it with `read_flows`. Pure: files only, no
sockets.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CSV_COLUMNS = ("src", "sport", "dst", "dport", "packets", "ip_bytes", "payload_bytes", "syn", "fin", "rst")


@dataclass(frozen=True, slots=True)
class Flow:
    """One direction of one TCP connection, as counted on the wire."""

    src: str
    sport: int
    dst: str
    dport: int
    packets: int = 0
    ip_bytes: int = 0
    payload_bytes: int = 0
    syn: int = 0
    fin: int = 0
    rst: int = 0

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


def read_flows(path: str | Path) -> list[Flow]:
    """The flows in a capture CSV (as written by the capture process)."""
    with open(path, newline="") as f:
        return [
            Flow(row["src"], int(row["sport"]), row["dst"], int(row["dport"]), int(row["packets"]),
                 int(row["ip_bytes"]), int(row["payload_bytes"]), int(row.get("syn") or 0),
                 int(row.get("fin") or 0), int(row.get("rst") or 0))
            for row in csv.DictReader(f)
        ]


def write_flows(path: str | Path, flows: Iterable[Flow]) -> None:
    """Write flows as CSV, atomically (write a temporary file, then rename)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for f in flows:
        w.writerow((f.src, f.sport, f.dst, f.dport, f.packets, f.ip_bytes, f.payload_bytes, f.syn, f.fin, f.rst))
    replace_file(Path(path), buf.getvalue())


def stats_path(out: str | Path) -> Path:
    """Where the JSON sidecar of capture CSV `out` goes: FILE.csv -> FILE.stats.json."""
    out = Path(out)
    return out.with_name(out.stem + ".stats.json") if out.suffix else out.with_name(out.name + ".stats.json")


def replace_file(path: Path, text: str) -> None:
    """Write `text` beside `path`, then rename it over `path`, so a reader of the capture's files (rewritten
    every interval while the capture runs) never sees half a file. Unlike `harness.state.write_atomic` it does
    not fsync: these are rewritten every second."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
