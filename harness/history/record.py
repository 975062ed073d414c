"""A run folder as the one record of an experiment: everything any figure needs, and nothing live.

`harness run` writes these beside the history as the run ends; `harness analyse`, `fit` and `report` read
them back, in a fresh process, on any machine, with no service running:

- config.yaml: the resolved z, the run id, runtime, link backend, machine, commit
  (`harness.experiment.run.write_config`)
- events.jsonl: the whole history (`harness.history`)
- deployment.json: every service (its spec) and every link (planes, latencies, what the source dials)
- counters.json: what was counted outside the history: CPU per service since load start, the host's CPU
  busy fraction over the same span, the proxies' bytes per link, the harness's own CPU share, the
  collector's unreadable lines, the capture's kernel statistics
- reference.json: the monolith reference (t_m, CPU per workflow) the run was compared with (the cache in
  results/.cache is only a cache)
- wire.csv: the packet capture's flows, when it ran (`harness.measure.wire`)

`load(folder)` gives a `Record`; `harness.measure.summary.derive(record)` turns it into every table, purely.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import history
from harness.errors import UserError
from harness.history import Event
from harness.measure.wire import Flow, read_flows
from harness.plan.config import Experiment, build
from harness.plan.deploy import Deployment, Link
from protocol.spec import ServiceSpec

DEPLOYMENT = "deployment.json"
COUNTERS = "counters.json"
REFERENCE = "reference.json"
REQUIRED = ("config.yaml", "events.jsonl", DEPLOYMENT, COUNTERS, REFERENCE)


@dataclass
class Counters:
    """What was counted beside the history, over the spans `harness run` documents."""

    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # service -> (user s, system s)
    proxy: dict[str, dict[str, Any]] = field(default_factory=dict)  # link -> the proxy's byte counters
    harness_cpu_share: float = 0.0  # the harness's own CPU seconds per wall second of the run
    collector_bad_lines: int = 0  # lines the collector could not parse: events it could not record
    # the capture's stats sidecar (kernel_drops, ...) and `flows_used`: whether its flows (wire.csv) count
    capture: dict[str, Any] = field(default_factory=dict)
    # the host's CPU over the measured load (harness.measure.cpu.host_summary: cpus, busy, busy_p90, full,
    # seconds); {} in folders written before it was recorded
    host_cpu: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cpu": {k: list(v) for k, v in self.cpu.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counters:
        cpu = {k: (float(v[0]), float(v[1])) for k, v in data.get("cpu", {}).items()}
        return cls(**{**data, "cpu": cpu})


@dataclass
class Record:
    """One run folder, read back: the inputs of every figure."""

    z: Experiment
    run: str
    link_backend: str
    events: list[Event]  # the raw history, warm-up included (links.csv spans the whole run)
    deployment: Deployment
    counters: Counters
    reference: dict[str, float]
    flows: list[Flow] | None  # None: no capture ran
    # per phase (start, end), each node's clock offset from the harness with its uncertainty (config.yaml's
    # swarm section: harness.runtime.clocks); {} where every event came from one host's clock
    clock_offsets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def deployment_to_dict(d: Deployment) -> dict[str, Any]:
    return {"services": [dict(s.__dict__) for s in d.services], "links": [asdict(link) for link in d.links],
            "entry": d.entry, "entry_bytes": d.entry_bytes, "roles": d.roles}


def deployment_from_dict(z: Experiment, data: dict[str, Any]) -> Deployment:
    return Deployment(z, [ServiceSpec(**s) for s in data["services"]], [Link(**link) for link in data["links"]],
                      list(data["entry"]), int(data["entry_bytes"]), dict(data["roles"]))


def _dump(path: Path, data: Any) -> None:
    """JSON with exact floats (repr round-trips), written whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True), encoding="utf-8")
    tmp.replace(path)


def save_deployment(out: Path, deployment: Deployment) -> None:
    _dump(out / DEPLOYMENT, deployment_to_dict(deployment))


def save_counters(out: Path, counters: Counters) -> None:
    _dump(out / COUNTERS, counters.to_dict())


def save_reference(out: Path, reference: dict[str, float]) -> None:
    _dump(out / REFERENCE, reference)


def load(folder: str | Path) -> Record:
    """The record of a finished run, or a one-line UserError naming what is missing."""
    folder = Path(folder)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise UserError(f"analyse: {folder} is not a finished run folder (missing {', '.join(missing)})")
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    z = build(config["z"])
    counters = Counters.from_dict(json.loads((folder / COUNTERS).read_text(encoding="utf-8")))
    return Record(
        z=z, run=str(config["run"]), link_backend=str(config.get("link_backend", "")),
        events=history.read(folder / "events.jsonl"),
        deployment=deployment_from_dict(z, json.loads((folder / DEPLOYMENT).read_text(encoding="utf-8"))),
        counters=counters,
        reference=json.loads((folder / REFERENCE).read_text(encoding="utf-8")),
        # a capture that failed at its end left a partial wire.csv that no figure used
        flows=read_flows(folder / "wire.csv") if counters.capture.get("flows_used") else None,
        clock_offsets=(config.get("swarm") or {}).get("clock_offsets") or {},
    )
