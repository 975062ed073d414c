"""The faults `harness run --fault NAME` knows.

- slm-crash: SIGKILL the instance driving the target request (the owning SLM; in the distributed design,
  the owning instance of the module at that point). The crash of section III. At `worst` the driver has
  sent its last heartbeat and fallen silent at the modelled moment first (faults/aim.py).
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
on any target, at `time:T` or `request:K+D` (faults/instances.py).
"""

from __future__ import annotations

from faults.aimed import Aimed
from faults.base import Fault, FaultContext
from faults.broker import BrokerCrash, BrokerPartition, BrokerPause
from faults.contract import FaultError
from faults.instances import BY_INSTANCE
from faults.links import LinkDelay, Partition
from faults.processes import SlmCrash, SlmPause, WorkerCrash

FAULTS: dict[str, type[Aimed]] = {f.name: f for f in (SlmCrash, WorkerCrash, SlmPause, LinkDelay, Partition,
                                                        BrokerCrash, BrokerPause, BrokerPartition)}
# A runner's list of fault names must be these and BY_INSTANCE's (manobench: harness.plan.config.FAULTS, the
# registry its CLI and sweep specs choose from); tests/test_faults_library.py holds the two to each other.


def make(ctx: FaultContext) -> Fault | None:
    """The configured fault, or None for `fault: none`."""
    if ctx.z.fault == "none":
        return None
    catalogue: dict[str, type[Fault]] = {**BY_INSTANCE} if ctx.z.by_instance else {**FAULTS}
    if ctx.z.fault not in catalogue:  # a runner that checked its names never gets here
        aimed = "at instances (fault_target)" if ctx.z.by_instance else "at a request's driver"
        raise FaultError(f"fault {ctx.z.fault}: not a fault {aimed} (known: {', '.join(catalogue)})")
    return catalogue[ctx.z.fault](ctx)
