"""Whether one run of z fits this machine: the caps of harness.plan.bounds.CAPS, checked before a run starts.

An experiment z inside its bounds (harness.plan.bounds.BOUNDS) can always be modelled, but not always run:
k = 100 SLMs, a 3600 s time-out at time_scale 100, or 100 000 workflows are all fine for `harness model` and
hopeless on 2 cores, where they used to start and then hang, crash after a minute, or fail half-way through
bringing services up (n = 100 000 was refused by the local runtime only after the run's header). The
figures here come from the plan itself (the deployment's services and links) and the model (t_c, t_l), so
a refusal names what would have been too much and by how much.
"""

from __future__ import annotations

import math

from harness import model
from harness.errors import ConfigError
from harness.plan import deploy
from harness.plan.bounds import CAPS
from harness.plan.config import PER_TASK_KEYS, Experiment

_SIZE_KEYS = ("s_z", "h_s", "p_c", "P_a", "P_b", "P")


def services_and_links(z: Experiment) -> tuple[int, int]:
    """How many service processes (the broker included) and links one run of z makes, from the plan itself."""
    plan = deploy.plan(z, "capacity", lambda _: "127.0.0.1", "127.0.0.1:1", None)
    return len(plan.services) + (1 if deploy.uses_broker(z) else 0), len(plan.links)


def heartbeats_per_second(z: Experiment) -> float:
    """Heartbeat messages a wall second on the run's detectors: every ordered pair of SLMs, or both twins
    of every module (fenced: and every module to the witness), each sending h_r a paper second."""
    witness = 2 * z.n if z.mechanism == "fenced" else 0
    streams = {"centralised": z.k * (z.k - 1), "distributed": 2 * z.n + witness}.get(z.design, 0)
    return streams * z.h_r / z.time_scale


def modelled_duration(z: Experiment) -> tuple[float, str]:
    """Wall seconds the run lasts by the model, and how that was counted (for the message).

    Closed loop: the warm-up's and the measured load's rounds of `users` workflows, each t_c; open loop: the
    offered requests at `rate` a wall second plus one t_c to finish. A fault adds its detection and the work
    it loses (t_l) and how long it lasts; `time:T` strikes T after the load starts, so the run lasts at least
    that long. The monolith reference of a centralised or distributed run is a few workflows more."""
    metrics = model.evaluate(z)
    t_c, ts = metrics.t_c, z.time_scale
    warm = z.users if z.warmup is None else z.warmup
    if z.rate is None:
        rounds = math.ceil(warm / z.users) + math.ceil(z.requests / z.users)
        load = rounds * t_c * ts
        how = f"{rounds} rounds of {z.users} workflows x t_c {t_c:.3g} s x time_scale {ts:g}"
    else:
        load = (math.ceil(warm / max(1, z.users)) + 1) * t_c * ts + z.requests / z.rate
        how = f"{z.requests} requests at rate {z.rate:g}/s, and t_c {t_c:.3g} s x time_scale {ts:g}"
    if z.fault != "none":
        lost = metrics.t_l if math.isfinite(metrics.t_l) else 0.0
        load += (lost + z.fault_duration) * ts
        how += f", and the fault's t_l {lost:.3g} s + {z.fault_duration:.3g} s"
    if z.fault_time is not None:
        load = max(load, z.fault_time * ts + t_c * ts)
        how += f", the fault at time:{z.fault_time:g}"
    if z.design != "monolith":
        load += math.ceil(min(z.requests, 2 * z.users) / z.users) * model.t_m(z) * ts
    return load, how


def check_run(z: Experiment) -> None:
    """Raise a one-line ConfigError if one run of z would not fit this machine (CAPS, docs/parameters.md).

    Call it before a run prints or starts anything: `harness run` does, in harness.cli.commands.run_cmd (before
    `--force` may remove anything), and harness.experiment.run.experiment again for every other caller.
    """
    if z.fault_at == "every":
        raise ConfigError("config error: fault_at: every explores every crash point, one run each: put it in a "
                          "sweep spec (harness sweep; docs/analysis.md, Exploration), or give task:K@F for one")
    sizes = {k: max(z.per_task(k)) if k in PER_TASK_KEYS else float(getattr(z, k)) for k in _SIZE_KEYS}
    biggest = max(sizes, key=lambda k: sizes[k])
    if sizes[biggest] > CAPS["message"].value:
        raise ConfigError(f"config error: {biggest}: a run sends messages of at most {CAPS['message'].value:g} kB "
                          f"(got {sizes[biggest]:g} kB; docs/parameters.md)")
    services, links = services_and_links(z)
    if services > CAPS["services"].value:
        raise ConfigError(f"config error: n, k: this run would start {services} services, more than the "
                          f"{CAPS['services'].value:g} one run may start here (n={z.n}, k={z.k}, worker copies "
                          f"{z.worker_replicas}; docs/parameters.md)")
    if links > CAPS["links"].value:
        raise ConfigError(f"config error: n, k: this run would make {links} links, more than the "
                          f"{CAPS['links'].value:g} one run may make (n={z.n}, k={z.k}; docs/parameters.md)")
    beats = heartbeats_per_second(z)
    if beats > CAPS["heartbeats"].value:
        raise ConfigError(f"config error: h_r: {beats:.4g} heartbeats a wall second (h_r {z.h_r:g} x the "
                          f"{'SLM pairs' if z.design == 'centralised' else 'twins'} / time_scale {z.time_scale:g}), "
                          f"more than the {CAPS['heartbeats'].value:g} this machine can serve: lower h_r or raise "
                          "time_scale (docs/parameters.md)")
    wall, how = modelled_duration(z)
    if not wall <= CAPS["duration"].value:
        raise ConfigError(f"config error: requests, time_scale: this run would last about {wall:.4g} wall seconds "
                          f"({how}), more than the {CAPS['duration'].value:g} s one run may last: fewer requests, "
                          "shorter tasks or a smaller time_scale (docs/parameters.md)")
