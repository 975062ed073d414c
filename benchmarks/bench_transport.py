"""http beside amqp for the default experiment (centralised, slm-crash at worst): t_c, t_r and B_tot as
measured, the paper model's and the bus-aware model's error, the broker's start time and CPU, and the
messages per second the broker carried. Prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_transport.py [--requests 12] [--queues transient|durable]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import tempfile
from pathlib import Path

from harness.experiment.run import experiment
from harness.plan.config import build

BUS_KINDS = {"task_reply": 2, "state_share_sent": 2, "done_sent": 2, "forward_sent": 2}  # message + its reply


def broker_figures(out: Path) -> dict[str, float]:
    """Messages the broker carried per wall second of the run (each message and its reply; heartbeats to
    every peer), its CPU seconds, and its start time."""
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    messages = sum(BUS_KINDS.get(e["kind"], 0) for e in events)
    messages += sum(2 * e["peers"] for e in events if e["kind"] == "hb_sent")
    ts = [e["t"] for e in events]
    cpu = {r["service"]: float(r["total_s"]) for r in csv.DictReader((out / "cpu.csv").open())}
    ready = [e["started_in"] for e in events if e["kind"] == "broker_ready"]
    return {"msgs_per_s": messages / (max(ts) - min(ts)), "broker_cpu_s": cpu.get("broker", float("nan")),
            "broker_start_s": ready[0] if ready else float("nan")}


def pct(measured: str, model: str) -> str:
    try:
        error = 100 * (float(measured) / float(model) - 1)
    except (ValueError, ZeroDivisionError):
        return "-"
    return "-" if math.isnan(error) else f"{error:+.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--queues", default="transient")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    print(f"default experiment, {args.requests} requests, queues {args.queues}; runs in {root}")
    print(f"{'transport':9} {'metric':6} {'measured':>9} {'paper':>9} {'err':>7} {'bus':>9} {'err':>7}")
    for transport in ("http", "amqp"):
        z = build({"design": "centralised", "fault": "slm-crash", "transport": transport, "queues": args.queues,
                   "requests": args.requests})
        out = root / transport
        asyncio.run(experiment(z, out, load="builtin", cache=root / ".cache", say=lambda _: None))
        row = next(csv.DictReader((out / "summary.csv").open()))
        for metric in ("t_c", "t_r", "B_tot"):
            m, p, b = row[f"{metric}_measured"], row[f"{metric}_model"], row[f"{metric}_model_bus"]
            print(f"{transport:9} {metric:6} {float(m):9.2f} {float(p):9.2f} {pct(m, p):>7} "
                  f"{(float(b) if b else float('nan')):9.2f} {pct(m, b):>7}")
        print(f"{transport:9} verdict {row['verdict']}, lost {row['lost']}, duplicated {row['duplicated']}, "
              f"false suspicions {row['false_suspicions']}, host busy {row.get('host_busy', '')}")
        if transport == "amqp":
            f = broker_figures(out)
            print(f"amqp      broker: started in {f['broker_start_s']:.1f} s, CPU {f['broker_cpu_s']:.2f} s, "
                  f"{f['msgs_per_s']:.0f} messages/s carried; framing {float(row['header_bytes_per_message']):.0f} "
                  "bytes/message on the heartbeat plane")


if __name__ == "__main__":
    main()
