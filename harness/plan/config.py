"""One experiment configuration z, named after the paper's symbols and checked before anything starts.

Units are the paper's: seconds, kB (1 kB = 1000 bytes) and kB/s. Durations here are *paper* durations; the
runtime multiplies them by `time_scale` so a 60 s workflow can run in 0.6 s, and reports divide again.

Defaults sit inside the ranges of section VI-A (t_i in [1, 60] s, n in [5, 15], latencies in [0.01, 0.2] s,
s_z in [100, 500] kB, payloads in [10, 300] kB, t_o = 0.15 s, h_s = 0.1 kB, t_h >= 3 / h_r) and h_r = 2 as
chosen for Fig. 7.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from harness.errors import ConfigError

Design = Literal["monolith", "centralised", "distributed"]
Mechanism = Literal["state-sharing", "restart"]
Reading = Literal["corrected", "literal"]
FaultName = Literal["none", "slm-crash", "worker-crash", "slm-pause", "link-delay", "partition",
                    "broker-crash", "broker-pause", "broker-partition"]
Runtime = Literal["local", "docker", "swarm"]
LinkBackend = Literal["auto", "proxy", "netem"]
Work = Literal["sleep", "burn"]
Transport = Literal["http", "amqp"]
Queues = Literal["transient", "durable"]

# The registries: each list of names is written once, above, and every choice (CLI, sweep specs) comes from it.
DESIGNS: tuple[str, ...] = get_args(Design)
MECHANISMS: tuple[str, ...] = get_args(Mechanism)
FAULTS: tuple[str, ...] = get_args(FaultName)  # harness.faults.catalogue.FAULTS holds the class of each but "none"
RUNTIMES: tuple[str, ...] = get_args(Runtime)
LINK_BACKENDS: tuple[str, ...] = get_args(LinkBackend)
TRANSPORTS: tuple[str, ...] = get_args(Transport)

PerTask = float | list[float]
"""One value for every task, or a list of exactly n values (one per task m_1 .. m_n)."""

PER_TASK_KEYS = ("t_i", "l_a", "l_b", "l", "P_a", "P_b", "P")
_EPS = 1e-9


class Experiment(BaseModel):
    """The configuration z of one experiment: design, mechanism and every parameter of Eqs 1-10."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=False, allow_inf_nan=False)

    design: Design = "centralised"
    mechanism: Mechanism = Field("state-sharing", description="restart = no state sharing (Kubernetes/Akka)")
    model_reading: Reading = Field("corrected", description="how ambiguous equations are read (docs/model.md)")

    n: StrictInt = Field(6, ge=1, description="number of tasks / microservices in the workflow")
    t_i: PerTask = Field(5.0, description="task duration of m_i [s]")
    t_m: float | None = Field(None, gt=0, description="total task time; gives t_i = t_m / n (Figs 7, 8)")
    t_o: float = Field(0.15, ge=0, description="orchestrator processing between tasks [s]")
    l_a: PerTask = Field(0.05, description="latency orchestrator -> m_i [s]")
    l_b: PerTask = Field(0.05, description="latency m_i -> orchestrator [s]")
    l: PerTask = Field(0.05, description="distributed: latency of hop i into m_{i+1} (hop 0 = source -> m_1) [s]")
    l_hb: float = Field(0.05, ge=0, description="latency of a heartbeat message [s]")
    h_r: float = Field(2.0, gt=0, description="heartbeat rate [1/s]")
    t_h: float | None = Field(None, gt=0, description="heartbeat time-out [s]; default 3 / h_r")
    t_h_mult: float | None = Field(None, gt=0, description="heartbeat time-out as a multiple of 1 / h_r")
    s_p: StrictInt = Field(1, ge=1, description="state sharing period [tasks]")
    s_o: StrictInt = Field(1, ge=1, description="state sharing offset: tasks before the first share")
    h_s: float = Field(0.1, ge=0, description="heartbeat message size [kB]")
    h_m: float = Field(0.0, ge=0, description="heartbeat bandwidth of the non-orchestrator services [kB/s]")
    s_z: float = Field(200.0, ge=0, description="size of the shared state [kB]")
    P_a: PerTask = Field(50.0, description="message orchestrator -> m_i [kB]")
    P_b: PerTask = Field(50.0, description="message m_i -> orchestrator [kB]")
    P: PerTask = Field(200.0, description="distributed: state sent on hop i into m_{i+1} [kB]")
    p_c: float = Field(0.1, ge=0, description="distributed: 'done' message to the twin [kB]")
    k: StrictInt = Field(2, ge=2, description="number of orchestrator (SLM) instances")
    time_scale: float = Field(0.2, gt=0, description="multiplies every duration when running")

    # --- how an experiment is run (harness run); durations in paper seconds like everything else -----------
    runtime: Runtime = Field("local", description="local processes, Docker containers, or services on a Docker "
                              "Swarm (docs/swarm.md)")
    link_backend: LinkBackend = Field("auto", description="link latency: netem where the kernel has it, else proxy")
    transport: Transport = Field("http", description="how services talk: HTTP point to point, or a RabbitMQ bus "
                                 "(docs/transport.md)")
    queues: Queues = Field("transient", description="amqp: transient (SONATA's: automatic acks) or durable "
                           "(persistent messages, publisher confirms, ack after the work)")
    t_bus: float = Field(0.02, ge=0, description="bus-aware model: the broker's forwarding time per message [s]")
    amqp_frame: float = Field(0.0, ge=0, description="bus-aware model: AMQP framing per message and leg [kB]")
    fault: FaultName = Field("none", description="the fault to inject (faults/)")
    fault_at: str = Field("worst", description="worst | task:K | task:K@F | time:T | every (T in paper seconds "
                          "after load starts; F heartbeat intervals after the end of task K; every: a sweep "
                          "explores every crash point)")
    fault_for: float | None = Field(None, gt=0, description="pause/partition/delay duration [s]; default 2 t_h")
    spike: float = Field(1.0, ge=0, description="link-delay: latency added to the links hit [s]")
    requests: StrictInt = Field(20, ge=1, description="workflows the BSS submits")
    users: StrictInt = Field(4, ge=1, description="closed loop: concurrent BSS users")
    rate: float | None = Field(None, gt=0, description="open loop: requests per wall second (overrides users)")
    warmup: StrictInt | None = Field(None, ge=0, description="workflows run before the measured load and left out "
                                     "of every figure (cold connections and code paths); default one per user")
    seed: int | None = Field(None, description="seed for request UUIDs and jitter")
    work: Work = Field("sleep", description="emulated t_i and t_o: sleep, or burn CPU so CPU figures mean something")
    worker_replicas: int | None = Field(None, ge=1, le=2, description="copies of each m_i; default 2 for worker-crash")
    container_cpus: float | None = Field(None, gt=0, description="docker: CPU limit per container (cores)")
    container_memory: str | None = Field(None, pattern=r"^[0-9]+[bkmg]?$", description="docker: memory, e.g. 256m")

    alpha: float | None = Field(None, ge=0, description="cost weight of R_a (Eq 10)")
    beta: float | None = Field(None, ge=0, description="cost weight of R_r (Eq 10)")
    gamma: float | None = Field(None, ge=0, description="cost weight of B_tot [per kB/s] (Eq 10)")
    delta: float | None = Field(None, ge=0, description="cost weight of Q_r (Eq 10)")

    @model_validator(mode="after")
    def _check_rules(self) -> Experiment:
        if self.mechanism == "restart" and self.design != "centralised":
            raise ValueError(f"mechanism: restart applies to the centralised design only (got design={self.design})")
        if self.t_m is not None:
            if "t_i" in self.model_fields_set:
                raise ValueError("t_m: give t_i or t_m, not both")
            self.t_i = self.t_m / self.n
        for key in PER_TASK_KEYS:
            value = getattr(self, key)
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) != self.n:
                raise ValueError(f"{key}: a list needs exactly n={self.n} values (got {len(value)})")
            if any(not math.isfinite(v) or v < 0 for v in values):
                raise ValueError(f"{key}: every value must be a finite number >= 0 (got {value!r})")
        self._check_fault()
        if self.runtime == "swarm" and self.transport == "amqp":
            raise ValueError("transport: amqp is not wired for the swarm runtime (docs/swarm.md): use transport http")
        if self.s_o > self.n:
            raise ValueError(f"s_o: must be <= n (got s_o={self.s_o}, n={self.n})")
        if self.t_h is not None and self.t_h_mult is not None:
            raise ValueError("t_h: give t_h or t_h_mult, not both")
        if self.t_h_mult is not None:
            self.t_h = self.t_h_mult / self.h_r
        elif self.t_h is None:
            self.t_h = 3.0 / self.h_r
        if self.t_h < 3.0 / self.h_r * (1 - _EPS):
            if self.t_h_mult is not None:
                raise ValueError(f"t_h_mult: must be at least 3 heartbeat intervals (got {self.t_h_mult:g})")
            raise ValueError(
                f"t_h: must be at least 3 heartbeat intervals, 3 / h_r = {3.0 / self.h_r:g} s "
                f"(got t_h={self.t_h:g} s)"
            )
        return self

    def _check_fault(self) -> None:
        kind, _, arg = self.fault_at.partition(":")
        if self.fault_at not in ("worst", "every") and kind not in ("task", "time"):
            raise ValueError(f"fault_at: use worst, task:K, task:K@F, time:T or every (got {self.fault_at!r})")
        arg, at, phase = arg.partition("@")
        if kind == "task" and not (arg.isdigit() and 1 <= int(arg) <= self.n):
            raise ValueError(f"fault_at: task:K needs 1 <= K <= n={self.n} (got {self.fault_at!r})")
        if kind == "task" and at and not _fraction(phase):
            raise ValueError(f"fault_at: task:K@F needs a phase 0 <= F < 1 heartbeat interval (got {self.fault_at!r})")
        if kind == "time":
            try:
                valid = float(arg) >= 0
            except ValueError:
                valid = False
            if not valid:
                raise ValueError(f"fault_at: time:T needs a number of seconds >= 0 (got {self.fault_at!r})")
        if self.fault != "none" and self.design == "monolith":
            raise ValueError(f"fault: the monolith has no reliability mechanism to test; {self.fault} needs the "
                             "centralised or distributed design")
        if self.worker_replicas is None:
            self.worker_replicas = 2 if self.fault == "worker-crash" and self.design == "centralised" else 1
        elif self.fault == "worker-crash" and self.design == "centralised" and self.worker_replicas < 2:
            raise ValueError("worker_replicas: worker-crash needs 2 instances of each worker (got 1)")

    @property
    def fault_task(self) -> int | None:
        """K of fault_at task:K and task:K@F."""
        kind, _, arg = self.fault_at.partition(":")
        return int(arg.partition("@")[0]) if kind == "task" else None

    @property
    def fault_phase(self) -> float | None:
        """F of fault_at task:K@F: the crash comes F heartbeat intervals after the driver's heartbeat at the end
        of task K (harness/faults/aim.py)."""
        kind, _, arg = self.fault_at.partition(":")
        return float(arg.partition("@")[2]) if kind == "task" and "@" in arg else None

    @property
    def fault_time(self) -> float | None:
        """T of fault_at time:T, paper seconds."""
        kind, _, arg = self.fault_at.partition(":")
        return float(arg) if kind == "time" else None

    @property
    def fault_duration(self) -> float:
        """How long a pause, partition or latency spike lasts (paper seconds): long enough to be noticed."""
        assert self.t_h is not None
        return self.fault_for if self.fault_for is not None else 2 * self.t_h

    def per_task(self, key: str) -> list[float]:
        """The n per-task values of a key that may be given as one value or a list."""
        value = getattr(self, key)
        return [float(v) for v in value] if isinstance(value, list) else [float(value)] * self.n

    @property
    def weights(self) -> tuple[float, float, float, float] | None:
        """(alpha, beta, gamma, delta), missing ones as 0, or None when no weight was given."""
        given = (self.alpha, self.beta, self.gamma, self.delta)
        if all(w is None for w in given):
            return None
        return tuple(0.0 if w is None else float(w) for w in given)  # type: ignore[return-value]

    def resolved(self) -> dict[str, Any]:
        """The full resolved configuration as plain data, as recorded beside the results; it builds the same
        Experiment again (t_h_mult and t_m are folded into the t_h and t_i they gave)."""
        data = self.model_dump(mode="json")
        data.pop("t_h_mult")
        data.pop("t_m")
        return data


def _fraction(text: str) -> bool:
    """Whether text is a number in [0, 1)."""
    try:
        return 0 <= float(text) < 1
    except ValueError:
        return False


def _one_line(err: ValidationError) -> str:
    """Pydantic's first complaint as one line that names the key and the rule."""
    first = err.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}' (known keys: {', '.join(Experiment.model_fields)})"
    msg = first["msg"].removeprefix("Value error, ")
    if key:
        return f"{key}: {msg} (got {first.get('input')!r})"
    return msg


def build(data: dict[str, Any]) -> Experiment:
    """Validate plain data into an Experiment, or raise ConfigError with one line."""
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"config error: {_one_line(err)}") from None


def read_file(path: str | Path) -> dict[str, Any]:
    """The key/value mapping of a YAML or TOML experiment file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config error: no such config file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config error: {path} is not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"config error: cannot read {path}: {err.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config error: {path}: use a .yaml, .yml or .toml file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        detail = str(err).replace("\n", " ")
        raise ConfigError(f"config error: {path} does not parse: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path}: the top level must be a mapping of key: value")
    return data


def parse_value(text: str) -> Any:
    """A --set value: a YAML scalar or list, and `a,b,c` as a list."""
    if "," in text and not text.strip().startswith("["):
        return [parse_value(part) for part in text.split(",")]
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignment(item: str) -> tuple[str, Any]:
    """`key=value` into (key, parsed value)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"config error: --set expects key=value (got {item!r})")
    return key.strip(), parse_value(value.strip())


def apply_overrides(data: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """Later assignments win; t_h/t_h_mult and t_i/t_m replace each other so a sweep can switch freely."""
    merged = dict(data)
    for key, value in overrides:
        for pair in (("t_h", "t_h_mult"), ("t_i", "t_m")):
            if key in pair:
                merged.pop(pair[1] if key == pair[0] else pair[0], None)
        merged[key] = value
    return merged


def load(
    path: str | Path | None = None,
    sets: list[str] | tuple[str, ...] = (),
    **fixed: Any,
) -> Experiment:
    """The experiment from an optional file, CLI flags (`fixed`, None = not given) and `--set` overrides."""
    data = read_file(path) if path else {}
    flags = [(k, v) for k, v in fixed.items() if v is not None]
    return build(apply_overrides(data, flags + [parse_assignment(s) for s in sets]))
