"""Faults, after Chaos Toolkit: each has setup / inject / heal, logs every action into the experiment's
history. Where and when a fault strikes is decided by `harness.faults.aim` from the live
history: `task:K` right after task K of the target request, `worst` where the model says the lost time is
largest, `time:T` T paper-seconds after the load starts.
"""

from harness.faults.base import Fault, FaultContext
from harness.faults.catalogue import FAULTS, make

__all__ = ["FAULTS", "Fault", "FaultContext", "make"]
