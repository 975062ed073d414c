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
- wire.csv: the packet capture's flows, when it ran (its format: `harness.history.flows`; written by
  `harness.measure.capture_process`)
- target.yaml: the target file the run deployed, as it was read (`harness run --target`); absent for our
  designs
- manifest.json: the seal written as the run closes: the requests it expected and the digest of every file
  above (`harness.history.manifest`), so a doctored or half-written folder is recognised as such

Every file is read through one guarded reader (`harness.history.guarded`): whatever is wrong with it is one
line naming the file (exit 2), and the history's lines that are not events are counted as holes
(`harness.history.reading`), never skipped in silence.

`load(folder)` gives a `Record`; `harness.measure.summary.derive(record)` turns it into every table, purely.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.checker import Evidence
from harness.errors import UserError
from harness.history import Event, manifest
from harness.history.flows import Flow, read_flows
from harness.history.guarded import guard, read_json, read_yaml
from harness.history.reading import read_history
from harness.plan.config import Experiment, build
from harness.plan.deploy import Deployment, Link
from harness.plan.target import TargetFile
from harness.plan.target import load as load_target
from harness.state import write_json_atomic
from protocol.spec import ServiceSpec

DEPLOYMENT = "deployment.json"
COUNTERS = "counters.json"
REFERENCE = "reference.json"
TARGET = "target.yaml"
REQUIRED = ("config.yaml", "events.jsonl", DEPLOYMENT, COUNTERS, REFERENCE)


@dataclass
class Counters:
    """What was counted beside the history, over the spans `harness run` documents."""

    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # service -> (user s, system s)
    proxy: dict[str, dict[str, object]] = field(default_factory=dict)  # link -> the proxy's counters (bytes_fwd...)
    harness_cpu_share: float = 0.0  # the harness's own CPU seconds per wall second of the run
    collector_bad_lines: int = 0  # lines the collector could not parse: events it could not record
    # the capture's stats sidecar (kernel_drops, ...) and `flows_used`: whether its flows (wire.csv) count
    capture: dict[str, int | float | str | bool | None] = field(default_factory=dict)
    # the host's CPU over the measured load (harness.measure.cpu.host_summary: cpus, busy, busy_p90, full,
    # seconds); {} in folders written before it was recorded
    host_cpu: dict[str, float] = field(default_factory=dict)
    # requests to an instrument (collector, BSS, proxyd's control, /hb-now, the swarm agent) without the run's
    # secret, refused and counted by instrument (docs/security.md); {} in folders written before it was counted
    refused: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "cpu": {k: list(v) for k, v in self.cpu.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counters:
        """counters.json read back, every field of the type it must have (else TypeError/ValueError naming it).
        `data` is JSON as read, untyped until checked here."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}")
        for name in ("cpu", "proxy", "capture", "host_cpu", "refused"):
            if not isinstance(data.get(name, {}), dict):
                raise TypeError(f"{name} is not a mapping")
        cpu = {}
        for svc, pair in data.get("cpu", {}).items():
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValueError(f"cpu.{svc} is not a pair (user s, system s)")
            cpu[str(svc)] = (float(pair[0]), float(pair[1]))
        if not all(isinstance(v, dict) for v in data.get("proxy", {}).values()):
            raise TypeError("proxy holds a link that is not a mapping")
        host = data.get("host_cpu", {})
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in host.values()):
            raise TypeError("host_cpu holds a value that is not a number")
        refused = {str(k): int(v) for k, v in data.get("refused", {}).items()}
        return cls(**{**data, "cpu": cpu, "refused": refused,
                      "collector_bad_lines": int(data.get("collector_bad_lines", 0)),
                      "harness_cpu_share": float(data.get("harness_cpu_share", 0.0))})


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
    clock_offsets: dict[str, list[dict[str, float | str]]] = field(default_factory=dict)
    # the history's lines that are not events, by kind (harness.history.reading.HOLE_KINDS)
    history_holes: dict[str, int] = field(default_factory=dict)
    # what the folder says about itself: the requests the run expected, whether it is the folder it sealed
    evidence: Evidence = field(default_factory=Evidence)
    target: TargetFile | None = None  # the target file deployed (target.yaml), None for our designs


def deployment_to_dict(d: Deployment) -> dict[str, object]:
    # every field of a service's spec but its key: a run folder is shared, the run's keys are not
    services = [{k: v for k, v in s.__dict__.items() if k != "secret"} for s in d.services]
    return {"services": services, "links": [asdict(link) for link in d.links], "entry": d.entry,
            "entry_bytes": d.entry_bytes, "roles": d.roles, "entries": d.entries}


def deployment_from_dict(z: Experiment, data: dict[str, Any]) -> Deployment:
    return Deployment(z, [ServiceSpec(**s) for s in data["services"]], [Link(**link) for link in data["links"]],
                      list(data["entry"]), int(data["entry_bytes"]), dict(data["roles"]),
                      {str(k): dict(v) for k, v in data.get("entries", {}).items()})


def _dump(path: Path, data: object) -> None:
    """JSON with exact floats (repr round-trips), written whole or not at all."""
    write_json_atomic(path, data)


def save_deployment(out: Path, deployment: Deployment) -> None:
    _dump(out / DEPLOYMENT, deployment_to_dict(deployment))


def save_counters(out: Path, counters: Counters) -> None:
    _dump(out / COUNTERS, counters.to_dict())


def save_reference(out: Path, reference: dict[str, float]) -> None:
    _dump(out / REFERENCE, reference)


def load(folder: str | Path) -> Record:
    """The record of a finished run, or a one-line UserError naming what is missing or unreadable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"analyse: {folder} is not a run folder (no such directory)")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise UserError(f"analyse: {folder} is not a finished run folder (missing {', '.join(missing)})")
    config_path = folder / "config.yaml"
    config = read_yaml(config_path)
    with guard(config_path, "z"):
        z = build(config["z"])
        run, backend = str(config["run"]), str(config.get("link_backend", ""))
        swarm = config.get("swarm") or {}
        offsets = (swarm.get("clock_offsets") if isinstance(swarm, dict) else None) or {}
        if not isinstance(offsets, dict):
            raise TypeError("swarm.clock_offsets is not a mapping")
    with guard(folder / COUNTERS):
        counters = Counters.from_dict(read_json(folder / COUNTERS))
    with guard(folder / DEPLOYMENT):
        deployment = deployment_from_dict(z, read_json(folder / DEPLOYMENT))
    reference = read_json(folder / REFERENCE)
    with guard(folder / REFERENCE):
        for key in ("t_m", "cpu_per_workflow"):
            reference[key] = float(reference[key])
    history = read_history(folder / "events.jsonl")
    expected, integrity = manifest.check(folder)
    requests = (expected or {}).get("requests", z.requests)
    flows = None
    if counters.capture.get("flows_used"):  # a capture that failed at its end left a partial wire.csv
        with guard(folder / "wire.csv"):
            flows = read_flows(folder / "wire.csv")
    target = load_target(folder / TARGET) if (folder / TARGET).exists() else None
    return Record(
        z=z, run=run, link_backend=backend, events=history.events, deployment=deployment, counters=counters,
        reference=reference, flows=flows, clock_offsets=offsets, history_holes=history.holes,
        evidence=Evidence(expected_requests=requests if isinstance(requests, int) else z.requests,
                          sealed=expected is not None, integrity=tuple(integrity)),
        target=target,
    )
