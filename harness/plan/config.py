"""One experiment configuration z, named after the paper's symbols and checked before anything starts.

Units are the paper's: seconds, kB (1 kB = 1000 bytes) and kB/s. Durations here are *paper* durations; the
runtime multiplies them by `time_scale` so a 60 s workflow can run in 0.6 s, and reports divide again.

Defaults sit inside the ranges of section VI-A (t_i in [1, 60] s, n in [5, 15], latencies in [0.01, 0.2] s,
s_z in [100, 500] kB, payloads in [10, 300] kB, t_o = 0.15 s, h_s = 0.1 kB, t_h >= 3 / h_r) and h_r = 2 as
chosen for Fig. 7.

Every number has a bound (harness.plan.bounds, the table of docs/parameters.md) and every float is finite;
numbers written as text take ASCII digits only, and a file that gives a key twice is refused (YAML through
`UniqueKeyLoader`, TOML by tomllib, both named in one line). What one run may ask of the machine (processes,
heartbeats, its duration) is a separate check, harness.plan.capacity, since the model has no such limits.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.errors import ConfigError
from harness.plan.bounds import BOUNDS, NUMBER, check_text_numbers

Design = Literal["monolith", "centralised", "distributed"]
Mechanism = Literal["state-sharing", "restart", "fenced"]
Reading = Literal["corrected", "literal"]
FaultName = Literal["none", "slm-crash", "worker-crash", "slm-pause", "link-delay", "partition",
                    "broker-crash", "broker-pause", "broker-partition", "crash", "pause", "restart"]
Runtime = Literal["local", "docker", "swarm"]
LinkBackend = Literal["auto", "proxy", "netem"]
Work = Literal["sleep", "burn"]
Transport = Literal["http", "amqp"]
Queues = Literal["transient", "durable"]

# The registries: each list of names is written once, above, and every choice (CLI, sweep specs) comes from it.
DESIGNS: tuple[str, ...] = get_args(Design)
MECHANISMS: tuple[str, ...] = get_args(Mechanism)
FAULTS: tuple[str, ...] = get_args(FaultName)  # faults.catalogue.FAULTS holds the class of each but "none"
# faults aimed at instances by id or role (fault_target), on any target: the others are white-box aims at the
# driver of a request in our own designs; partition and link-delay are both, by whether fault_target is given
BY_INSTANCE: tuple[str, ...] = ("crash", "pause", "restart", "partition", "link-delay")
RUNTIMES: tuple[str, ...] = get_args(Runtime)
LINK_BACKENDS: tuple[str, ...] = get_args(LinkBackend)
TRANSPORTS: tuple[str, ...] = get_args(Transport)

PerTask = float | list[float]
"""One value for every task, or a list of exactly n values (one per task m_1 .. m_n)."""

PER_TASK_KEYS = ("t_i", "l_a", "l_b", "l", "P_a", "P_b", "P")
_EPS = 1e-9
_INT_KEYS = frozenset(k for k, b in BOUNDS.items() if b.integer)
_TASK = re.compile(r"task:(?P<k>[0-9]+)(?:@(?P<f>.*))?", re.ASCII | re.DOTALL)
_AIM = re.compile(r"(?:role:)?[a-z][a-z0-9-]{0,39}", re.ASCII)
_REQUEST = re.compile(r"request:(?P<k>[0-9]+)\+(?P<d>[0-9]+(?:\.[0-9]+)?)", re.ASCII)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


_SCALAR_BOUNDED = tuple(k for k in BOUNDS if k not in PER_TASK_KEYS and k != "container_memory" and " " not in k)
"""Bounded fields of one number: each checked on its own by Experiment._in_bounds (the per-task keys, given as
one value or a list, and container_memory, a size in text, by Experiment._check_rules)."""


class Experiment(BaseModel):
    """The configuration z of one experiment: design, mechanism and every parameter of Eqs 1-10."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=False, allow_inf_nan=False)

    design: Design = "centralised"
    mechanism: Mechanism = Field("state-sharing", description="restart = no state sharing (Kubernetes/Akka); fenced = "
                                 "ownership epochs through a majority: of k >= 3 SLMs, or of the twins and a "
                                 "witness (docs/fencing.md)")
    model_reading: Reading = Field("corrected", description="how ambiguous equations are read (docs/model.md)")

    n: StrictInt = Field(6, description="number of tasks / microservices in the workflow")
    t_i: PerTask = Field(5.0, description="task duration of m_i [s]")
    t_m: float | None = Field(None, description="total task time; gives t_i = t_m / n (Figs 7, 8)")
    t_o: float = Field(0.15, description="orchestrator processing between tasks [s]")
    l_a: PerTask = Field(0.05, description="latency orchestrator -> m_i [s]")
    l_b: PerTask = Field(0.05, description="latency m_i -> orchestrator [s]")
    l: PerTask = Field(0.05, description="distributed: latency of hop i into m_{i+1} (hop 0 = source -> m_1) [s]")
    l_hb: float = Field(0.05, description="latency of a heartbeat message [s]")
    h_r: float = Field(2.0, description="heartbeat rate [1/s]")
    t_h: float | None = Field(None, description="heartbeat time-out [s]; default 3 / h_r")
    t_h_mult: float | None = Field(None, description="heartbeat time-out as a multiple of 1 / h_r")
    s_p: StrictInt = Field(1, description="state sharing period [tasks]")
    s_o: StrictInt = Field(1, description="state sharing offset: tasks before the first share")
    h_s: float = Field(0.1, description="heartbeat message size [kB]")
    h_m: float = Field(0.0, description="heartbeat bandwidth of the non-orchestrator services [kB/s]")
    s_z: float = Field(200.0, description="size of the shared state [kB]")
    P_a: PerTask = Field(50.0, description="message orchestrator -> m_i [kB]")
    P_b: PerTask = Field(50.0, description="message m_i -> orchestrator [kB]")
    P: PerTask = Field(200.0, description="distributed: state sent on hop i into m_{i+1} [kB]")
    p_c: float = Field(0.1, description="distributed: 'done' message to the twin [kB]")
    k: StrictInt = Field(2, description="number of orchestrator (SLM) instances")
    time_scale: float = Field(0.2, description="multiplies every duration when running")

    # --- how an experiment is run (harness run); durations in paper seconds like everything else -----------
    runtime: Runtime = Field("local", description="local processes, Docker containers, or services on a Docker "
                              "Swarm (docs/swarm.md)")
    link_backend: LinkBackend = Field("auto", description="link latency: netem where the kernel has it, else proxy")
    transport: Transport = Field("http", description="how services talk: HTTP point to point, or a RabbitMQ bus "
                                 "(docs/transport.md)")
    queues: Queues = Field("transient", description="amqp: transient (SONATA's: automatic acks) or durable "
                           "(persistent messages, publisher confirms, ack after the work)")
    t_bus: float = Field(0.02, description="bus-aware model: the broker's forwarding time per message [s]")
    amqp_frame: float = Field(0.0, description="bus-aware model: AMQP framing per message and leg [kB]")
    fault: FaultName = Field("none", description="the fault to inject (faults/)")
    fault_at: str = Field("worst", description="worst | task:K | task:K@F | time:T | request:K+D | every (T in "
                          "paper seconds after load starts; F heartbeat intervals after the end of task K; D paper "
                          "seconds after request K was submitted; every: a sweep explores every crash point)")
    fault_target: list[str] = Field(default_factory=list, description="crash, pause, partition, link-delay: the "
                                    "instances struck, by id or role:NAME (a target file's, or our designs')")
    target: str | None = Field(None, description="a target file (docs/targets.md): deploy that orchestrator "
                               "instead of a design")
    fault_for: float | None = Field(None, description="pause/partition/delay duration [s]; default 2 t_h")
    spike: float = Field(1.0, description="link-delay: latency added to the links hit [s]")
    requests: StrictInt = Field(20, description="workflows the BSS submits")
    users: StrictInt = Field(4, description="closed loop: concurrent BSS users")
    rate: float | None = Field(None, description="open loop: requests per wall second (overrides users)")
    warmup: StrictInt | None = Field(None, description="workflows run before the measured load and left out "
                                     "of every figure (cold connections and code paths); default one per user")
    seed: StrictInt | None = Field(None, description="seed for request UUIDs and jitter")
    work: Work = Field("sleep", description="emulated t_i and t_o: sleep, or burn CPU so CPU figures mean something")
    worker_replicas: StrictInt | None = Field(None, description="copies of each m_i; default 2 for worker-crash")
    container_cpus: float | None = Field(None, description="docker: CPU limit per container (cores)")
    container_memory: str | None = Field(None, pattern=r"^[0-9]+[bkmg]?$", description="docker: memory, e.g. 256m")

    alpha: float | None = Field(None, description="cost weight of R_a (Eq 10)")
    beta: float | None = Field(None, description="cost weight of R_r (Eq 10)")
    gamma: float | None = Field(None, description="cost weight of B_tot [per kB/s] (Eq 10)")
    delta: float | None = Field(None, description="cost weight of Q_r (Eq 10)")

    @field_validator(*_SCALAR_BOUNDED)
    @classmethod
    def _in_bounds(cls, value: float | None, info: ValidationInfo) -> float | None:
        """Every number inside its bound, from the one table of them (harness.plan.bounds, docs/parameters.md)."""
        if value is None:
            return value
        bound = BOUNDS[str(info.field_name)]
        if bound.admits(value):
            return value
        if not (value > bound.low if bound.open_low else value >= bound.low):
            raise ValueError(f"Input should be greater than {'' if bound.open_low else 'or equal to '}{_g(bound.low)}")
        raise ValueError(f"Input should be less than or equal to {_g(bound.high)}")

    @field_validator("fault_target")
    @classmethod
    def _aims(cls, value: list[str]) -> list[str]:
        """Each aim an instance id or role:NAME, written as the target file's names are ([a-z0-9-])."""
        for aim in value:
            if not _AIM.fullmatch(aim):
                raise ValueError(f"an instance id or role:NAME of [a-z0-9-] (got {aim!r})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _check_text(cls, data: Any) -> Any:
        """Before pydantic converts anything: numbers written as text take ASCII digits only, and a number
        is never true/false (YAML reads `on`, `yes` and `true` as booleans, which pydantic would take as 1)."""
        if not isinstance(data, dict):
            return data
        for key, value in data.items():
            check_text_numbers(str(key), value)
            if key not in BOUNDS or key == "container_memory":
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool):
                    raise ValueError(f"{key}: a number, not {str(item).lower()} (got {value!r})")
                if isinstance(item, str) and key not in _INT_KEYS and not NUMBER.fullmatch(item.strip()):
                    raise ValueError(f"{key}: Input should be a valid number, in ASCII digits (got {value!r})")
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> Experiment:
        if self.mechanism == "restart" and self.design != "centralised":
            raise ValueError(f"mechanism: restart applies to the centralised design only (got design={self.design})")
        if self.mechanism == "fenced":
            if self.design == "monolith":
                raise ValueError("mechanism: fenced is a mechanism of the centralised and distributed designs "
                                 "(the monolith has none)")
            if self.design == "centralised" and self.k < 3:
                raise ValueError(f"k: fenced needs k >= 3 SLMs, so that a majority survives one (got k={self.k})")
            if self.target is not None:
                raise ValueError("mechanism: fenced is a mechanism of our own designs, not of a target file")
        if self.t_m is not None:
            if "t_i" in self.model_fields_set:
                raise ValueError("t_m: give t_i or t_m, not both")
            self.t_i = self.t_m / self.n
        for key in PER_TASK_KEYS:
            value = getattr(self, key)
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) != self.n:
                raise ValueError(f"{key}: a list needs exactly n={self.n} values (got {len(value)})")
            bound = BOUNDS[key]
            bad = next((v for v in values if not math.isfinite(v) or not bound.admits(v)), None)
            if bad is None:
                continue
            if key == "t_i" and self.t_m is not None:
                raise ValueError(f"t_m: gives t_i = t_m / n = {bad:g} s per task, outside {bound.text()} s")
            raise ValueError(f"{key}: every value must be a finite number >= 0 and <= {bound.high:g} {bound.unit} "
                             f"(got {value!r})")
        self._check_fault()
        if self.container_memory is not None:
            size = int(self.container_memory.rstrip("bkmg")) * _MEMORY_UNITS[self.container_memory.lstrip("0123456789")]
            if not BOUNDS["container_memory"].admits(size):
                raise ValueError(f"container_memory: Docker takes 6m .. 1024g (got {self.container_memory!r})")
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
        if not BOUNDS["t_h"].admits(self.t_h):
            given = f"t_h_mult / h_r = {self.t_h_mult:g} / {self.h_r:g}" if self.t_h_mult is not None else (
                f"3 / h_r = 3 / {self.h_r:g}" if "t_h" not in self.model_fields_set else f"{self.t_h:g}")
            raise ValueError(f"t_h: the heartbeat time-out must lie in {BOUNDS['t_h'].text()} s (got {given} s)")
        if self.t_h < 3.0 / self.h_r * (1 - _EPS):
            if self.t_h_mult is not None:
                raise ValueError(f"t_h_mult: must be at least 3 heartbeat intervals (got {self.t_h_mult:g})")
            raise ValueError(
                f"t_h: must be at least 3 heartbeat intervals, 3 / h_r = {3.0 / self.h_r:g} s "
                f"(got t_h={self.t_h:g} s)"
            )
        return self

    def _check_fault(self) -> None:
        """fault_at's form, and its numbers in ASCII digits and inside their bounds (docs/parameters.md)."""
        kind, _, arg = self.fault_at.partition(":")
        if self.fault_at not in ("worst", "every") and kind not in ("task", "time", "request"):
            raise ValueError(f"fault_at: use worst, task:K, task:K@F, time:T, request:K+D or every "
                             f"(got {self.fault_at!r})")
        request = _REQUEST.fullmatch(self.fault_at)
        if kind == "request" and not (request and 1 <= int(request["k"]) <= self.requests
                                      and BOUNDS["fault_at time:T"].admits(float(request["d"]))):
            raise ValueError(f"fault_at: request:K+D needs 1 <= K <= requests={self.requests} and D seconds in "
                             f"{BOUNDS['fault_at time:T'].text()}, in ASCII digits (got {self.fault_at!r})")
        named_only = ("crash", "pause", "restart")  # faults that exist only aimed at instances
        by_instance = self.fault in BY_INSTANCE and (self.fault_target or self.fault in named_only)
        if self.fault in named_only and not self.fault_target:
            raise ValueError(f"fault: {self.fault} strikes the instances fault_target names (an id or role:NAME); "
                             "none given")
        if self.fault_target and self.fault not in BY_INSTANCE:
            raise ValueError(f"fault_target: only {', '.join(BY_INSTANCE)} take a target (got fault {self.fault})")
        if kind == "request" and not by_instance:
            raise ValueError(f"fault_at: request:K+D is for faults by instance ({', '.join(BY_INSTANCE)} with "
                             f"fault_target), not {self.fault}")
        task = _TASK.fullmatch(self.fault_at)
        if kind == "task" and not (task and 1 <= int(task["k"]) <= self.n):
            raise ValueError(f"fault_at: task:K needs 1 <= K <= n={self.n} (got {self.fault_at!r})")
        if task and task["f"] is not None and not _fraction(task["f"]):
            raise ValueError(f"fault_at: task:K@F needs a phase 0 <= F < 1 heartbeat interval (got {self.fault_at!r})")
        if kind == "time" and not (NUMBER.fullmatch(arg) and BOUNDS["fault_at time:T"].admits(float(arg))):
            raise ValueError(f"fault_at: time:T needs a number of seconds in {BOUNDS['fault_at time:T'].text()}, "
                             f"in ASCII digits (got {self.fault_at!r})")
        if self.fault != "none" and self.design == "monolith" and self.target is None:
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
        of task K (faults/aim.py)."""
        kind, _, arg = self.fault_at.partition(":")
        return float(arg.partition("@")[2]) if kind == "task" and "@" in arg else None

    @property
    def fault_request(self) -> tuple[int, float] | None:
        """(K, D) of fault_at request:K+D: D paper seconds after the K-th measured request was submitted."""
        found = _REQUEST.fullmatch(self.fault_at)
        return (int(found["k"]), float(found["d"])) if found else None

    @property
    def by_instance(self) -> bool:
        """Whether the fault strikes instances named by fault_target (else the driver of a request)."""
        return bool(self.fault_target)

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


def _g(x: float) -> str:
    """A bound as pydantic prints one: 1, 0.001, 1e+06."""
    return f"{int(x)}" if x == int(x) and abs(x) < 1e15 else f"{x:g}"


def _fraction(text: str) -> bool:
    """Whether text is a number in [0, 1), written in ASCII digits."""
    return bool(NUMBER.fullmatch(text)) and 0 <= float(text) < 1


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


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names one key twice: YAML itself would keep the last value without a word."""

    def __init__(self, key: object, mark: yaml.Mark | None) -> None:
        self.key = key
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        super().__init__(problem=f"duplicate key {key!r}{where}")

    def __str__(self) -> str:
        return str(self.problem)


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:  # before merging: keys a `<<: *anchor` brings may be overridden on purpose
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: construct_mapping below says so
                continue
            if duplicate:
                raise DuplicateKeyError(key, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """yaml.safe_load, refusing duplicate keys (DuplicateKeyError, a yaml.YAMLError naming key and line)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass


def _toml_duplicate(text: str, err: tomllib.TOMLDecodeError) -> str | None:
    """The key tomllib refused to see twice ("Cannot overwrite a value", "Cannot declare ... twice"), as
    'key' (line N), or None when the error is another one. tomllib names the line, not the key."""
    msg = str(err)
    if not ("Cannot overwrite" in msg or "twice" in msg):
        return None
    lines = text.splitlines()
    at = re.search(r"line (\d+)", msg, re.ASCII)
    if at:
        number = int(at[1])
    else:  # "at end of document": the last line that says something
        number = max((i + 1 for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")),
                     default=0)
    line = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    key = line.strip("[]").strip() if line.startswith("[") else line.partition("=")[0].strip()
    return f"{key.strip(chr(34) + chr(39))!r} (line {number})"


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
            data = safe_load_unique(text)
        else:
            raise ConfigError(f"config error: {path}: use a .yaml, .yml or .toml file")
    except DuplicateKeyError as err:
        raise ConfigError(f"config error: {path}: {err}: a key may be given once") from None
    except tomllib.TOMLDecodeError as err:
        duplicate = _toml_duplicate(text, err)
        if duplicate:
            raise ConfigError(f"config error: {path}: duplicate key {duplicate}: a key may be given once") from None
        raise ConfigError(f"config error: {path} does not parse: {err}") from None
    except yaml.YAMLError as err:
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
        return safe_load_unique(text)
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
