"""A target file: an orchestrator manobench did not write, described as data (docs/targets.md).

`harness run --target PATH` (or `target:` in an experiment file) deploys what the file declares instead of
one of the reference designs: its instances (a command for the local runtime, an image for docker), the port
of each plane they listen on, which peer each talks to on which plane, where the client sends requests, and
which client that is. Faults aim at its instances by id or role (`--fault crash --fault-target slm-a`);
every figure is derived from what the client saw and what crossed the wire, and a target that does not speak
the event contract (`instrumented: false`) gets "n/a" for every figure that needs events, never a 0.

Everything is checked here, before anything starts: unknown keys, an instance without ports, a peer that is
not an instance or a plane the peer does not serve, an entry without an `op` port for the http client, a
command that does not exist, an image without a way to get it. Each error is one line naming the file.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from faults.contract import FaultError
from faults.selection import select_instances
from harness.errors import UserError
from harness.history.guarded import RecordFileError, read_text
from harness.plan.config import Experiment, build, safe_load_unique

NAME = re.compile(r"[a-z][a-z0-9-]{0,39}", re.ASCII)
PLANE = re.compile(r"[a-z][a-z0-9_]{0,15}", re.ASCII)
B_OF_PLANE = ("op", "rel")  # a plane's bytes count to B_op (operation) or to B_rel (reliability)


def _a_name(value: str) -> str:
    """An instance id, a role or a target's name: [a-z][a-z0-9-]*, as fault_target writes them."""
    if not NAME.fullmatch(value):
        raise ValueError(f"must be a name of [a-z0-9-], starting with a letter (got {value!r})")
    return value


class TargetError(UserError):
    """A target file that breaks a rule: one line naming the file and the rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstanceSpec(_Strict):
    """The rest of a reference service's spec (protocol.spec.ServiceSpec), for our own designs written as a target
    file: instance ids, which the planner turns into the addresses to dial on their `op` plane."""

    task: StrictInt | None = Field(None, ge=1, description="worker, module: the task it performs")
    workers: list[list[str]] = Field(default_factory=list, description="SLM: per task, the replicas of m_i")
    next: list[str] = Field(default_factory=list, description="module: both instances of m_{i+1}")


class Instance(_Strict):
    """One process (or container) of the target."""

    id: str = Field(description="unique in the file: [a-z][a-z0-9-]*")
    role: str = Field(description="what it is (slm, worker, conductor...): faults aim at role:NAME")
    command: list[str] | None = Field(None, description="local runtime: argv; run in the target file's folder")
    image: str | None = Field(None, description="docker runtime: the image its container runs (with `command`)")
    ports: dict[str, StrictInt] = Field(description="plane -> the port it listens on, at its own address")
    peers: dict[str, list[str]] = Field(default_factory=dict, description="peer id -> the planes it calls it on")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    spec: InstanceSpec | None = Field(None, description="instrumented targets: what our reference services read "
                                      "beyond peers (a worker's task, an SLM's workers, a module's next)")

    _name = field_validator("id", "role")(classmethod(lambda cls, value: _a_name(value)))

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("an instance needs at least one port (plane: port)")
        for plane, port in value.items():
            if not PLANE.fullmatch(plane):
                raise ValueError(f"plane names are [a-z0-9_] (got {plane!r})")
            if not 1024 <= port <= 65535:
                raise ValueError(f"{plane}: a port in 1024..65535 (got {port})")
        if len(set(value.values())) != len(value):
            raise ValueError("two planes on one port: each plane needs its own port (bytes are counted per port)")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("a command is a non-empty list: [program, arg, ...]")
        return value


class Ready(_Strict):
    """How the harness knows an instance can take work: an HTTP 200 on `path` of `plane` (for every instance
    that has that plane), else every port accepting a TCP connection."""

    plane: str = "op"
    path: str = Field("/health", pattern=r"^/[!-~]*$")


class ImageBuild(_Strict):
    """How to make an image the docker runtime needs, from a folder of the target's (never pulled)."""

    context: str = "."
    dockerfile: str = "Dockerfile"


class PythonClient(_Strict):
    python: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
                        description="module:Class implementing protocol.client.Client")


class TargetFile(_Strict):
    """The whole file (see the module docstring); `folder` is where it was read from."""

    name: str
    instrumented: StrictBool = Field(False, description="the instances speak the event contract (protocol.events)")
    instances: list[Instance]
    entry: list[str] = Field(description="the instances the client submits every request to")
    client: Literal["http"] | PythonClient = "http"
    client_options: dict[str, Any] = Field(default_factory=dict)
    planes: dict[str, Literal["op", "rel"]] = Field(default_factory=dict,
                                                    description="plane -> op or rel (default: op -> op, others rel)")
    latency: dict[str, float] = Field(default_factory=dict, description="paper s on every link of a plane")
    client_latency: float = Field(0.0, ge=0, le=60, description="paper s on the client's links to the entries "
                                  "(0: the paper's model keeps the client outside t_c)")
    ready: Ready | None = None
    ready_timeout: float = Field(60.0, gt=0, le=900, description="wall s an instance may take to be ready")
    images: dict[str, ImageBuild] = Field(default_factory=dict)
    python_path: list[str] = Field(default_factory=list, description="folders (relative to this file) added to "
                                   "sys.path for a python client")
    z: dict[str, Any] = Field(default_factory=dict, description="the paper's parameters the target follows: given "
                              "to every instance in its spec, and the model's values beside the measured ones")
    folder: str = Field("", description="set by the loader: the file's folder")

    _name = field_validator("name")(classmethod(lambda cls, value: _a_name(value)))

    @field_validator("latency")
    @classmethod
    def _latency(cls, value: dict[str, float]) -> dict[str, float]:
        for plane, seconds in value.items():
            if not 0 <= seconds <= 60:
                raise ValueError(f"{plane}: a latency in 0..60 s (got {seconds})")
        return value

    @model_validator(mode="after")
    def _links(self) -> TargetFile:
        ids = [i.id for i in self.instances]
        if not ids:
            raise ValueError("instances: at least one")
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"instances: id {twice[0]!r} is given twice")
        if "bss" in ids or "harness" in ids:
            raise ValueError("instances: 'bss' and 'harness' are the harness's own names")
        by_id = {i.id: i for i in self.instances}
        for inst in self.instances:
            named = [w for group in inst.spec.workers for w in group] + inst.spec.next if inst.spec else []
            for other in named:
                if other not in by_id or "op" not in by_id[other].ports:
                    raise ValueError(f"instance {inst.id}: spec names {other!r}, which is not an instance with an "
                                     "'op' port")
            for peer, planes in inst.peers.items():
                if peer not in by_id:
                    raise ValueError(f"instance {inst.id}: peer {peer!r} is not an instance "
                                     f"(instances: {', '.join(ids)})")
                if peer == inst.id:
                    raise ValueError(f"instance {inst.id}: an instance is not its own peer")
                missing = [p for p in planes if p not in by_id[peer].ports]
                if not planes or missing:
                    plane = (missing or ["(none given)"])[0]
                    raise ValueError(f"instance {inst.id}: peer {peer} has no port for plane {plane!r} "
                                     f"(its ports: {', '.join(by_id[peer].ports)})")
        if not self.entry:
            raise ValueError("entry: at least one instance")
        for name in self.entry:
            if name not in by_id:
                raise ValueError(f"entry: {name!r} is not an instance (instances: {', '.join(ids)})")
            if self.client == "http" and "op" not in by_id[name].ports:
                raise ValueError(f"entry: {name} has no 'op' port, where the http client posts /request")
        known = {p for i in self.instances for p in i.ports}
        for key, table in (("planes", self.planes), ("latency", self.latency)):
            stray = sorted(set(table) - known)
            if stray:
                raise ValueError(f"{key}: no instance has a plane {stray[0]!r} (planes: {', '.join(sorted(known))})")
        if self.ready is not None and not any(self.ready.plane in i.ports for i in self.instances):
            raise ValueError(f"ready: no instance has a plane {self.ready.plane!r}")
        return self

    # --- what the rest of the harness asks -----------------------------------------------------------------

    @property
    def base(self) -> Path:
        return Path(self.folder)

    def instance(self, svc: str) -> Instance:
        return next(i for i in self.instances if i.id == svc)

    def counts_to(self, plane: str) -> str:
        """op or rel: which of B_op and B_rel a plane's bytes count to."""
        return self.planes.get(plane, "op" if plane == "op" else "rel")

    def select(self, aims: list[str]) -> list[str]:
        """Instance ids named by `aims` (ids, or role:NAME for every instance of a role), in file order."""
        try:
            return select_instances({i.id: i.role for i in self.instances}, aims)
        except FaultError as err:
            raise TargetError(f"target {self.name}: {err}") from None

    def program(self, inst: Instance) -> str | None:
        """The program an instance's command runs, as a path the local runtime can start, or None if it is
        not there (a relative path is relative to the file's folder; a bare name is looked up on PATH, the
        harness's own interpreter's folder first, so `python3` is the Python manobench runs in)."""
        assert inst.command is not None
        prog = inst.command[0]
        if "/" in prog:
            path = (self.base / prog) if not os.path.isabs(prog) else Path(prog)
            return str(path) if path.is_file() and os.access(path, os.X_OK) else None
        return shutil.which(prog, path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))

    def check_runtime(self, runtime: str) -> None:
        """What the runtime needs of every instance, before anything starts: a program that exists (local),
        an image and a command (docker)."""
        if runtime == "swarm":
            raise TargetError(f"target {self.name}: target files run on the local and docker runtimes (not swarm yet)")
        for inst in self.instances:
            if runtime == "local":
                if inst.command is None:
                    raise TargetError(f"target {self.name}: instance {inst.id} has no command for the local runtime")
                if self.program(inst) is None:
                    where = f"in {self.base}" if "/" in inst.command[0] else "on PATH"
                    hint = " (was it built? make setup builds the examples)" if "/" in inst.command[0] else ""
                    raise TargetError(f"target {self.name}: instance {inst.id}: command {inst.command[0]!r} does not "
                                      f"exist {where} or is not executable{hint}")
            elif inst.image is None:
                raise TargetError(f"target {self.name}: instance {inst.id} has no image for the {runtime} runtime")


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    if first["type"] == "missing":
        return f"{loc}: missing"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def load(path: str | Path) -> TargetFile:
    """Read and check a target file, or raise TargetError with one line naming it."""
    path = Path(path)
    try:
        text = read_text(path)
    except RecordFileError as err:
        raise TargetError(f"target file: {err}") from None
    if path.suffix not in (".yaml", ".yml"):
        raise TargetError(f"target file {path}: use a .yaml or .yml file")
    try:
        data = safe_load_unique(text)
    except Exception as err:
        raise TargetError(f"target file {path} does not parse: {str(err).replace(chr(10), ' ')}") from None
    if not isinstance(data, dict):
        raise TargetError(f"target file {path}: the top level must be a mapping of key: value")
    if "folder" in data:
        raise TargetError(f"target file {path}: unknown key 'folder'")
    try:
        return TargetFile.model_validate({**data, "folder": str(path.resolve().parent)})
    except ValidationError as err:
        raise TargetError(f"target file {path}: {_one_line(err)}") from None


WHITE_BOX_AIMS = ("worst", "task")  # fault_at forms that read the target's own events (faults.aim)


def experiment_for(z: Experiment) -> tuple[Experiment, TargetFile | None]:
    """The experiment a run of z.target is: z with the target file's own `z:` for every key z was not given
    explicitly, and its time_scale 1 unless one of them says otherwise (a foreign orchestrator's durations
    are its own); and every rule a target run must keep, checked before anything starts (TargetError, one
    line). (z, None) when z names no target."""
    if z.target is None:
        return z, None
    target = load(z.target)
    # what the run was given explicitly; t_h and worker_replicas are set by the Experiment's own rules too, so a
    # t_h that is the default 3 / h_r counts as not given (it follows the target's h_r)
    given = set(z.model_fields_set) - {"worker_replicas"}
    if z.t_h is not None and abs(z.t_h - 3.0 / z.h_r) < 1e-12:
        given.discard("t_h")
    data = z.resolved()
    data.update({k: v for k, v in target.z.items() if k not in given})
    if "time_scale" not in given and "time_scale" not in target.z:
        data["time_scale"] = 1.0
    if not {"t_h", "t_h_mult"} & (given | set(target.z)):
        data.pop("t_h", None)
    data["target"] = str(Path(z.target).resolve())
    try:
        merged = build(data)
    except UserError as err:
        raise TargetError(f"target file {z.target}: z: {str(err).removeprefix('config error: ')}") from None
    check_run(merged, target)
    return merged, target


def check_run(z: Experiment, target: TargetFile) -> None:
    """What a run of `target` under z may ask, before anything starts."""
    target.check_runtime(z.runtime)
    if z.transport != "http":
        raise TargetError(f"target {target.name}: transport is the target's own business: leave transport at http "
                          "(it is for our designs)")
    if z.fault != "none" and not z.by_instance:
        raise TargetError(f"fault {z.fault} aims at the driver of a request in our designs; on target {target.name} "
                          f"use --fault {'crash' if 'crash' in z.fault else 'pause' if 'pause' in z.fault else z.fault}"
                          " --fault-target ID|role:NAME")
    if z.fault != "none" and not target.instrumented and z.fault_at.partition(":")[0] in WHITE_BOX_AIMS:
        raise TargetError(f"fault_at {z.fault_at} reads the target's own events, and target {target.name} has none "
                          "(instrumented: false): use --fault-at time:T or request:K+D")
    target.select(z.fault_target)
