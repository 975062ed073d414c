"""Faults, after Chaos Toolkit: each has setup / inject / heal, logs every action into the experiment's
history. Where and when a fault strikes is decided by `faults.aim` from the live
history: `task:K` right after task K of the target request, `worst` where the model says the lost time is
largest, `time:T` T paper-seconds after the load starts.

A library any runner can drive: it imports nothing of its runner, only `protocol` and itself. What it needs of
the run (z, the deployment, the history, the controls of processes, links and the broker, the model's pure
pieces) is typed in `faults.contract` and handed in as a `FaultContext`; a fault that does not fit the run
raises `FaultError`, which the runner reports (manobench: one line, exit code 2).

Importing the package (or `faults.contract`, `faults.explore`) loads no fault's code: the names below are
imported when first used, so the pure floors of a runner that only read the contract or the crash points (in
manobench: the plan, the record, the checker, the figures) never load the catalogue.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faults.base import Fault, FaultContext
    from faults.catalogue import FAULTS, make
    from faults.contract import FaultError

_WHERE = {"Fault": "faults.base", "FaultContext": "faults.base", "FAULTS": "faults.catalogue",
          "make": "faults.catalogue", "FaultError": "faults.contract"}

__all__ = ["FAULTS", "Fault", "FaultContext", "FaultError", "make"]


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'faults' has no attribute {name!r}")
