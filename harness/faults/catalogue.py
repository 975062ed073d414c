"""The faults `harness run --fault NAME` knows.

- slm-crash: SIGKILL the instance driving the target request (the owning SLM; in the distributed design,
  the owning instance of the module at that point). The crash of section III. At `worst` the driver has
  sent its last heartbeat and fallen silent at the modelled moment first (harness/faults/aim.py).
- worker-crash: SIGKILL the worker m_K answering the target request's task K, just before it would have
  answered (centralised, workers duplicated); in the distributed design the modules are the workers, so it
  is the same as slm-crash.
- slm-pause: SIGSTOP the driver for fault_for, then SIGCONT: a grey failure. It is declared dead, a
  survivor takes over, then it wakes up and finishes too: without fencing, in the centralised design the
  BSS sees a duplicate; in the distributed one both twins run the task and the next module drops the
  second hop (`request_duplicate`), so the BSS does not.
- link-delay: add `spike` seconds of latency to the driver's operational links for fault_for.
- partition: cut the heartbeat and state links between the driver and its peers for fault_for, both ways:
  each side thinks the other is dead.

With `fault_target` (ids or role:NAME), crash, pause, partition and link-delay strike those instances instead,
on any target, at `time:T` or `request:K+D` (harness/faults/instances.py).
"""

from __future__ import annotations

from harness.faults.aimed import Aimed
from harness.faults.base import Fault, FaultContext
from harness.faults.broker import BrokerCrash, BrokerPartition, BrokerPause
from harness.faults.instances import BY_INSTANCE
from harness.faults.links import LinkDelay, Partition
from harness.faults.processes import SlmCrash, SlmPause, WorkerCrash
from harness.plan import config

FAULTS: dict[str, type[Aimed]] = {f.name: f for f in (SlmCrash, WorkerCrash, SlmPause, LinkDelay, Partition,
                                                        BrokerCrash, BrokerPause, BrokerPartition)}
# the names are the config's (harness.plan.config.FAULTS, the registry); this maps each to its class
assert set(FAULTS) | set(BY_INSTANCE) == set(config.FAULTS) - {"none"}, "config.FaultName and the catalogue disagree"
assert set(BY_INSTANCE) == set(config.BY_INSTANCE), "config.BY_INSTANCE and harness.faults.instances disagree"


def make(ctx: FaultContext) -> Fault | None:
    """The configured fault, or None for `fault: none`."""
    if ctx.z.fault == "none":
        return None
    if ctx.z.by_instance:  # crash, pause, partition, link-delay at the instances fault_target names
        return BY_INSTANCE[ctx.z.fault](ctx)
    return FAULTS[ctx.z.fault](ctx)
