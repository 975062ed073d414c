"""The message bus shape both sides know (`transport: amqp`): SONATA's, one topic exchange, a queue per
subscriber, a routing key per kind of message.

Which messages go on the bus: every message between MANO services (task calls and replies, the chain's
hops, heartbeats, state shares, 'done'). The BSS's requests and completion notices and the harness's hooks
(`/health`, `/hb-now`, `/release`) stay HTTP: the BSS is SONATA's gatekeeper, the boundary where REST
requests enter the platform, and the hooks are the harness's, not the MANO system's.

An address on the bus is `bus:<key suffix>`: a service's own id for point-to-point messages (a peer's
heartbeats, shares and 'done', a module's hop into one instance of m_{i+1}), and `task.<i>` for task i's
calls, which the replicas of worker m_i take from one shared queue (competing consumers: a crashed
replica's unacknowledged call goes to the other one).

Every message is a request with a reply (AMQP's RPC pattern: `reply_to` names the sender's reply queue of
that plane, `correlation_id` pairs them), so the sender learns what the HTTP transport tells it with a
status code: accepted, refused (4xx, in the reply's `type`), or no answer within its time-out.
"""

from __future__ import annotations

from protocol.messages import PLANES

BROKER_ID = "broker"  # the run's broker: its name among the run's hosts, links and processes, and as a fault's target

EXCHANGE = "son-kernel"  # SONATA's topic exchange
AMQP_PORT = 5672
BUS_PREFIX = "bus:"
QUEUES = ("transient", "durable")  # SONATA's way (non-durable queues, automatic acks) or the safe one

# path of the message (as on the HTTP transport) -> (plane, routing-key stem); the key is `<stem>.<suffix>`
KEYS: dict[str, tuple[str, str]] = {
    "/task": ("op", "mano.worker.task"),
    "/request": ("op", "mano.chain.request"),
    "/hb": ("hb", "mano.heartbeat"),
    "/state": ("state", "mano.inter.slm.state"),
    "/done": ("state", "mano.inter.done"),
    "/vote": ("state", "mano.inter.slm.vote"),  # the fenced mechanism's (docs/fencing.md)
    "/confirm": ("state", "mano.inter.slm.confirm"),
}
assert {plane for plane, _ in KEYS.values()} <= set(PLANES)


def bus_address(suffix: str) -> str:
    """What a spec names where the destination is on the bus: `bus:slm-b`, `bus:task.3`."""
    return f"{BUS_PREFIX}{suffix}"


def on_bus(address: str) -> bool:
    return address.startswith(BUS_PREFIX)


def routing_key(path: str, address: str) -> str:
    """The routing key of a message to `path` at a bus address."""
    return f"{KEYS[path][1]}.{address.removeprefix(BUS_PREFIX)}"


def queue_name(svc: str, plane: str) -> str:
    """The subscriber's own queue of one plane; `shared` names it after what its replicas share."""
    return f"{svc}.{plane}"


def reply_queue(svc: str, plane: str) -> str:
    return f"{svc}.{plane}.reply"


def task_call_timeout(t_i: float, time_scale: float) -> float:
    """Seconds an SLM waits for the reply to a call of a task lasting `t_i` seconds (both as run, i.e.
    scaled): ten times the task, 30 paper seconds of slack, and 5 s more for a loaded host. On the bus a call
    whose consumer died after taking it (an automatic ack: transient queues) has no one left to answer and is
    no refused connection: the SLM learns of it only at this time-out (harness.model.bus, docs/transport.md)."""
    return 10 * t_i + 30 * time_scale + 5
