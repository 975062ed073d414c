"""A bus-aware model beside the paper's: this project's extension, not Soenen et al.'s (docs/transport.md).

On a message bus every message goes publisher -> broker -> consumer. With the latency mapping of
`harness.plan.deploy.bus_legs` (all of a message's latency on its delivery leg) a message still crosses
exactly the paper's l_a, l_b, l, l_hb, so what the bus adds is:

- time: the broker's own forwarding of each message, `t_bus` (paper seconds per message: routing, queueing
  behind other traffic, the extra proxy and socket passes of the second leg). On the centralised critical
  path there are 2n messages (each task call and its reply), on the distributed one n - 1 (the hops between
  modules; hop 0 from the BSS stays HTTP). Recovery (t_l) adds one for the last heartbeat and 2 per redone
  task (centralised; the distributed twin redoes t_i alone, as in Eq 7).
- bytes: every body crosses the network twice, once published and once delivered (the broadcast to k
  subscribers of a topic would be 1 + k; every message here has one consumer), and each leg carries
  `amqp_frame` kB of AMQP framing per message (method, header and body frames, routing key, properties) and
  per reply (the RPC answer: the HTTP transport's response). The default 0 counts bodies only, as the
  measured B does; the wire's framing per message is in summary.csv's `header_bytes_per_message`.
- a worker crash on transient queues (centralised): the call was acknowledged on delivery and dies with the
  replica that took it; no connection is refused, so the SLM learns of it only at its RPC time-out
  (`protocol.bus.task_call_timeout`) and then calls the other replica, which does the task again from the
  start: the crashed call's part of t_c becomes the time-out, t_l = the time-out (of the task struck). On
  durable queues the broker hands the unacknowledged call to the other replica as the connection drops, as
  a refused HTTP connection would, and Eq 3's t_l stands.

Everything else is Eqs 1-10 as `harness.model` reads them (model_reading applies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.model import equations, registry, tasks
from harness.plan.config import Experiment
from protocol.bus import task_call_timeout

LEGS = 2  # publisher -> broker, broker -> consumer
BUS_COLUMNS = registry.BUS  # summary.csv's <metric>_model_bus


@dataclass(frozen=True)
class BusTerms:
    """What the bus adds to one workflow: broker passes on the critical path and in recovery, messages."""

    critical: int  # broker passes on the workflow's critical path
    recovery: int  # broker passes added to t_l
    op_messages: int  # operational messages per workflow (each also has a reply)
    rel_messages: float  # reliability messages per workflow (shares, 'done')
    hb_streams: int  # heartbeat streams (sender -> receiver pairs)


def terms(z: Experiment) -> BusTerms:
    if z.design == "centralised":
        shares = 0 if z.mechanism == "restart" else len(tasks.share_points(z.n, z.s_o, z.s_p))
        redone = z.n if z.mechanism == "restart" else max(len(r) for r in tasks.unshared_runs(
            z.n, tasks.share_points(z.n, z.s_o, z.s_p)))
        return BusTerms(2 * z.n, 1 + 2 * redone, z.n, (z.k - 1) * (shares + 1), z.k * (z.k - 1))
    if z.design == "distributed":
        # hops 1..n-1 on the bus, each to both instances of the next module; a 'done' per module
        return BusTerms(max(0, z.n - 1), 1, 2 * max(0, z.n - 1), z.n, 2 * z.n)
    return BusTerms(0, 0, 0, 0, 0)


def worker_timeout(z: Experiment) -> float | None:
    """Paper seconds a centralised workflow loses to a worker crash on transient queues (the SLM's RPC
    time-out for the task struck: `fault_at task:K`, else the longest task), None where Eq 3 applies."""
    if z.fault != "worker-crash" or z.design != "centralised" or z.queues != "transient":
        return None
    durations = tasks.task_durations(z)
    t_k = durations[z.fault_task - 1] if z.fault_task else max(durations)
    return task_call_timeout(t_k * z.time_scale, z.time_scale) / z.time_scale


def heartbeat_rate(z: Experiment) -> float:
    """kB/s of heartbeat bodies, as the paper's model counts them under z's reading (Eqs 4 and 8)."""
    if z.design == "centralised":
        return (z.h_s * z.h_r) if z.model_reading == "literal" else z.k * (z.k - 1) * z.h_s * z.h_r
    return (z.n if z.model_reading == "literal" else 2 * z.n) * z.h_s * z.h_r


def evaluate(z: Experiment) -> equations.Metrics:
    """The bus-aware figures of z (the monolith has no bus: the paper's figures)."""
    paper = equations.evaluate(z)
    if z.design == "monolith":
        return paper
    bus = terms(z)
    frame = z.amqp_frame * 2  # the message's framing and its reply's, per leg
    t_c = paper.t_c + bus.critical * z.t_bus
    timeout = worker_timeout(z)
    t_l = paper.t_l + bus.recovery * z.t_bus if timeout is None else timeout
    hb = LEGS * (heartbeat_rate(z) + bus.hb_streams * frame * z.h_r)
    if z.design == "centralised":
        op = LEGS * (sum(z.per_task("P_a")) + sum(z.per_task("P_b")) + bus.op_messages * frame)
        if z.model_reading == "literal":
            shares = 0 if z.mechanism == "restart" else tasks.literal_share_count(z.n, z.s_o, z.s_p)
            rel = LEGS * z.s_z * shares
        else:
            shares = 0 if z.mechanism == "restart" else len(tasks.share_points(z.n, z.s_o, z.s_p))
            rel = LEGS * (z.k - 1) * (z.s_z * shares + z.p_c)
        b_rel = z.h_m + hb + (rel + LEGS * bus.rel_messages * frame) / t_c
    else:
        hops = z.per_task("P")  # hop 0 comes from the BSS over HTTP, once; hops 1..n-1 cross the bus
        copy = hops[0] + LEGS * (sum(hops[1:]) + bus.op_messages / 2 * frame)  # one copy of every hop
        op = copy
        b_rel = hb + (copy + LEGS * (z.n * z.p_c + bus.rel_messages * frame)) / t_c  # the twin's copy, 'done'
    return equations.assemble(z, paper.t_m, t_c, t_l, op / t_c, b_rel, paper.Q_r)


def columns(z: Experiment) -> dict[str, float]:
    """summary.csv's `<metric>_model_bus` (NaN on the HTTP transport: written empty)."""
    if z.transport != "amqp":
        return {registry.BY_NAME[m].bus_column: math.nan for m in BUS_COLUMNS}
    row = evaluate(z).as_row()
    return {registry.BY_NAME[m].bus_column: float(row[m]) for m in BUS_COLUMNS}  # type: ignore[arg-type]
