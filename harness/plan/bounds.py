"""The bounds of every experiment parameter, and the caps on what one run may ask of this machine.

Two tiers, because two commands use an experiment z in different ways:

- `BOUNDS`: what z may hold at all, checked whenever z is built (`harness model`, `optimise`, `run`, sweep
  points, recorded folders read again). They are the paper's ranges (section VI-A) widened so that the model
  can explore around them (h_r = 1e6 stands for "h_r -> infinity" in the findings' tests), and closed where a
  value stops meaning anything or breaks the arithmetic: h_r = 1e-320 makes t_h = 3 / h_r infinite, k = 1e12
  SLMs or a 1e308 s time-out cannot be anything but a typo.
- `CAPS`: what one `harness run` may ask of the machine it runs on (2 cores here): how many service
  processes and links it starts, how many heartbeats a wall second its detectors exchange, how large a
  message body is, and how long the run lasts by the model. `harness.plan.capacity.check_run` applies them,
  before a run prints or starts anything.

Both tables are rendered into docs/parameters.md by `markdown()` (`python -m harness.plan.bounds`), and a test
holds the document to this module, so the two cannot drift apart.

Numbers written as text (a `--set` value, a string in a YAML file, the K, F and T of `fault_at`) take ASCII
digits only: Python's int() and float() accept any Unicode digit ("١" is 1), which would let a value the
user cannot read on the screen run as another.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

HOUR = 3600.0


@dataclass(frozen=True)
class Bound:
    """low <= value <= high (low < value when `open_low`); `why` is the reason, as the docs print it."""

    low: float
    high: float
    unit: str
    why: str
    open_low: bool = False
    integer: bool = False
    shown: str = ""  # the interval as the docs print it, where numbers would not read well (memory sizes)

    def admits(self, value: float) -> bool:
        """Whether a value (one of a per-task list, or a derived one) lies inside the bound."""
        above = value > self.low if self.open_low else value >= self.low
        return above and value <= self.high

    def text(self) -> str:
        """The bound as an interval, e.g. `(0, 3600]`."""
        return self.shown or f"{'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}]"


_PAPER_T = "paper: t_i in [1, 60] s; an hour per task is far beyond any MANO task"
_LATENCY = "paper: [0.01, 0.2] s in a data centre; a minute is far beyond any link"
_SIZE = "paper: [10, 300] kB (s_z [100, 500] kB, topologies 'into the MBs'); 100 MB is far beyond"

BOUNDS: dict[str, Bound] = {
    "n": Bound(1, 1000, "tasks", "paper: [5, 15], Figs 7-8 to 20; the model explores further", integer=True),
    "k": Bound(2, 100, "SLMs", "two are the paper's; k >= 2 so one survives a crash", integer=True),
    "t_i": Bound(0, HOUR, "s", _PAPER_T + " (each value of a list, and t_m / n)"),
    "t_m": Bound(0, 1000 * HOUR, "s", "paper: [10, 120] s; n tasks of at most an hour", open_low=True),
    "t_o": Bound(0, HOUR, "s", "paper: 0.15 s (SONATA profiling)"),
    "l_a": Bound(0, 60, "s", _LATENCY),
    "l_b": Bound(0, 60, "s", _LATENCY),
    "l": Bound(0, 60, "s", _LATENCY),
    "l_hb": Bound(0, 60, "s", _LATENCY),
    "h_r": Bound(0.001, 1e6, "1/s", "a heartbeat at least every 1000 s, so 3 / h_r stays within t_h's bound; "
                 "1e6 stands for h_r -> infinity in the model"),
    "t_h": Bound(0, HOUR, "s", "at least 3 / h_r (paper); an hour without noticing a crash is no detector",
                 open_low=True),
    "t_h_mult": Bound(0, 1000, "intervals", "at least 3 (paper); gives t_h = t_h_mult / h_r", open_low=True),
    "s_p": Bound(1, 1000, "tasks", "paper: 1 .. 3 in Fig 7; at most n matters", integer=True),
    "s_o": Bound(1, 1000, "tasks", "paper: s_o <= n", integer=True),
    "h_s": Bound(0, 10_000, "kB", "paper: 0.1 kB (a UUID)"),
    "h_m": Bound(0, 1e6, "kB/s", "heartbeat bandwidth of the other services; 1 GB/s is beyond any link"),
    "s_z": Bound(0, 100_000, "kB", _SIZE),
    "P_a": Bound(0, 100_000, "kB", _SIZE),
    "P_b": Bound(0, 100_000, "kB", _SIZE),
    "P": Bound(0, 100_000, "kB", _SIZE),
    "p_c": Bound(0, 100_000, "kB", _SIZE),
    "time_scale": Bound(0.001, 100, "x", "below a millisecond per paper second timers are noise; above 100x "
                        "a paper second lasts minutes", open_low=False),
    "t_bus": Bound(0, 60, "s", "a broker's forwarding time per message; a minute is a dead broker"),
    "amqp_frame": Bound(0, 10_000, "kB", "AMQP framing per message is tens of bytes"),
    "fault_for": Bound(0, HOUR, "s", "a pause, partition or spike longer than an hour outlasts any run",
                       open_low=True),
    "spike": Bound(0, 60, "s", "latency added to a link, like l_a"),
    "requests": Bound(1, 100_000, "workflows", "a run's duration is capped apart (see the caps)", integer=True),
    "users": Bound(1, 1000, "users", "concurrent BSS users in one Locust process", integer=True),
    "rate": Bound(0, 1000, "1/s", "open loop, requests per wall second from one Locust process",
                  open_low=True),
    "warmup": Bound(0, 100_000, "workflows", "like requests", integer=True),
    "seed": Bound(0, 2**63 - 1, "-", "fits the signed 64-bit columns of every table", integer=True),
    "worker_replicas": Bound(1, 2, "copies", "one, or two so a worker crash has a survivor", integer=True),
    "container_cpus": Bound(0, 1024, "cores", "a Docker CPU limit", open_low=True),
    "container_memory": Bound(6 * 2**20, 2**40, "bytes", "Docker's minimum is 6m; 1024g is beyond any host",
                              shown="[6m, 1024g]"),
    "alpha": Bound(0, 1e6, "-", "a weight of Eq 10"),
    "beta": Bound(0, 1e6, "-", "a weight of Eq 10"),
    "gamma": Bound(0, 1e6, "per kB/s", "a weight of Eq 10"),
    "delta": Bound(0, 1e6, "-", "a weight of Eq 10"),
    # The numbers inside fault_at (task:K, task:K@F, time:T): checked by Experiment._check_fault.
    "fault_at task:K": Bound(1, 1000, "task", "K <= n: the task after which the fault strikes", integer=True),
    "fault_at task:K@F": Bound(0, 1, "intervals", "F < 1: a phase within one heartbeat interval"),
    "fault_at time:T": Bound(0, 10 * HOUR, "s", "after the load starts; the run's duration is capped apart"),
}
"""Every bounded parameter; the keys not of the form `fault_at ...` are Experiment fields."""

FAULT_AT_BOUNDS = ("fault_at task:K", "fault_at task:K@F", "fault_at time:T")
UPPER_OPEN = {"fault_at task:K@F"}  # F < 1, not <= 1


@dataclass(frozen=True)
class Cap:
    """A limit on one run on this machine, with its unit and why."""

    value: float
    unit: str
    why: str


CAPS: dict[str, Cap] = {
    "services": Cap(64, "processes", "service processes of one run (n x worker copies + k SLMs, 2n modules, "
                    "plus the broker): Fig 8's 40 modules already saturate 2 cores below time_scale 0.25"),
    "links": Cap(1000, "links", "proxied links: proxyd holds a listener and up to 4 sockets per link"),
    "heartbeats": Cap(2000, "messages per wall second", "heartbeat streams x h_r / time_scale: 800/s already "
                      "saturated 2 cores (experiments/fig8.yaml at time_scale 0.1)"),
    "message": Cap(16_000, "kB", "the largest body one service sends (s_z, P_a, P_b, P, h_s, p_c): each is "
                   "held in memory twice over by the services"),
    "duration": Cap(HOUR, "wall seconds", "a run's modelled duration: the warm-up and measured rounds of t_c, "
                    "the fault's detection and recovery, and a time:T fault, all x time_scale"),
}
"""What one `harness run` may ask of this machine; applied by harness.plan.capacity.check_run."""


# --- numbers written as text ------------------------------------------------------------------------------

NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
"""A decimal number in ASCII digits: what a float given as text must look like (no `inf`, `1_0`, `١`)."""


def foreign_digit(text: str) -> str | None:
    """The first character of text that is a digit or numeral other than ASCII 0-9, or None."""
    for ch in text:
        if ch not in "0123456789" and (ch.isnumeric() or unicodedata.category(ch) == "Nd"):
            return ch
    return None


def check_text_numbers(key: str, value: Any) -> None:
    """Raise ValueError naming `key` if a string in value (or in a list of them) has a non-ASCII digit."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            ch = foreign_digit(item)
            if ch is not None:
                raise ValueError(f"{key}: numbers take ASCII digits 0-9 only; {ch!r} "
                                 f"({unicodedata.name(ch, 'a non-ASCII digit')}) is not one (got {item!r})")


# --- the document ---------------------------------------------------------------------------------------


def _num(x: float) -> str:
    """A bound as the docs print it: 2^63-1, 1000000, 0.001."""
    if x == 2**63 - 1:
        return "2^63-1"
    return f"{int(x)}" if x == int(x) else f"{x:g}"


def interval(key: str) -> str:
    """The bound of `key` as the docs print it."""
    text = BOUNDS[key].text()
    return text[:-1] + ")" if key in UPPER_OPEN else text


def markdown() -> str:
    """The two tables of docs/parameters.md, exactly as the document must hold them."""
    rows = ["| parameter | range | unit | integer | why |", "| --- | --- | --- | --- | --- |"]
    for key, b in BOUNDS.items():
        rows.append(f"| `{key}` | {interval(key)} | {b.unit} | {'yes' if b.integer else ''} | {b.why} |")
    rows += ["", "| cap | at most | unit | why |", "| --- | --- | --- | --- |"]
    for key, c in CAPS.items():
        rows.append(f"| {key} | {_num(c.value)} | {c.unit} | {c.why} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
