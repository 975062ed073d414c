"""The experiment z as a running reference service needs it (`Params`: wall seconds and bytes), and the
names of the SONATA SLM's tasks. What a service is told at start is the protocol's `ServiceSpec`.

Durations are converted to wall seconds with `time_scale` in one place (`Params`), so no service multiplies
on its own.
"""

from __future__ import annotations

from typing import Any

from protocol.messages import KB

# The SONATA SLM's service instantiation workflow (paper Fig 2; SONATA's SLM task list).
TASK_NAMES = (
    "validate-request", "request-topology", "request-policies", "placement", "network-create",
    "vnf-deploy", "vnf-start", "chain", "wan-configure", "store-record", "start-monitoring", "inform-bss",
)


def task_name(i: int) -> str:
    """Readable name of task i (1-based); workflows longer than SONATA's get numbered extra tasks."""
    return TASK_NAMES[i - 1] if i <= len(TASK_NAMES) else f"task-{i}"


class Params:
    """The experiment's parameters as a running service needs them: wall seconds and bytes."""

    def __init__(self, z: dict[str, Any]) -> None:
        self.scale = float(z["time_scale"])
        self.n = int(z["n"])
        self.k = int(z["k"])
        self.mechanism = str(z["mechanism"])
        self.work = str(z.get("work", "sleep"))
        self.s_p, self.s_o = int(z["s_p"]), int(z["s_o"])
        self.t_i = [self.scale * v for v in _per_task(z["t_i"], self.n)]
        self.t_o = self.scale * float(z["t_o"])
        self.hb_interval = self.scale / float(z["h_r"])
        self.t_h = self.scale * float(z["t_h"])
        self.hb_bytes = int(float(z["h_s"]) * KB)
        self.state_bytes = int(float(z["s_z"]) * KB)
        self.done_bytes = int(float(z["p_c"]) * KB)
        self.p_a = [int(v * KB) for v in _per_task(z["P_a"], self.n)]
        self.p_b = [int(v * KB) for v in _per_task(z["P_b"], self.n)]
        self.hop_bytes = [int(v * KB) for v in _per_task(z["P"], self.n)]

    def share_after(self, task: int) -> bool:
        """Whether the processing SLM shares its state after `task` (s_o, s_o + s_p, ... below n): with state
        sharing and fenced (which shares the same way), never with restart."""
        return self.mechanism != "restart" and task >= self.s_o and task < self.n and (
            (task - self.s_o) % self.s_p == 0
        )

    @property
    def max_message(self) -> int:
        """Largest body any plane should accept; anything bigger is refused with 413."""
        return 2 * max(self.state_bytes, *self.p_a, *self.p_b, *self.hop_bytes, 64 * KB) + 64 * KB


def _per_task(value: Any, n: int) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)] * n
