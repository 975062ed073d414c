"""The fault catalogue as a library of its own (the top-level `faults`, issue 21): it loads nothing of the harness
or the targets, its names are the harness's registry's, it refuses a fault it does not have with its own error,
and the harness still turns a fault that does not fit the run into one line and exit code 2."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from faults import FAULTS, FaultContext, FaultError, make
from faults.instances import BY_INSTANCE
from harness import model
from harness.history import Collector
from harness.plan import config
from harness.plan.deploy import plan
from harness.runtime import leftovers
from tests.cli_runner import run_main

ROOT = Path(__file__).resolve().parents[1]


def test_the_library_loads_nothing_of_the_harness_or_the_targets() -> None:
    """In a fresh interpreter, importing every module of faults leaves no harness or targets module loaded
    (import-linter checks the import statements; this checks what an import really does)."""
    code = ("import sys, pkgutil, importlib, faults\n"
            "for m in pkgutil.iter_modules(faults.__path__): importlib.import_module('faults.' + m.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('harness', 'targets')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_the_catalogue_has_a_class_for_every_name_of_the_registry() -> None:
    """harness.plan.config.FAULTS (what the CLI and sweep specs accept) and the catalogue name the same faults:
    the driver's (FAULTS) and those at instances (BY_INSTANCE), which may share a name (partition)."""
    assert set(FAULTS) | set(BY_INSTANCE) == set(config.FAULTS) - {"none"}
    assert set(BY_INSTANCE) == set(config.BY_INSTANCE)


def test_a_fault_the_catalogue_does_not_have_is_its_own_error() -> None:
    z = config.build({"design": "centralised"}).model_copy(update={"fault": "no-such-fault"})
    ctx = FaultContext(z, plan(z, "r", lambda s: "127.0.0.1", "127.0.0.1:1", None), Collector(),
                       processes=None, model=model)  # type: ignore[arg-type]
    with pytest.raises(FaultError, match=r"^fault no-such-fault: not a fault at a request's driver \(known: "):
        make(ctx)


def test_a_broker_fault_off_the_bus_is_the_faults_own_error() -> None:
    z = config.build({"design": "centralised", "fault": "broker-pause"})
    ctx = FaultContext(z, plan(z, "r", lambda s: "127.0.0.1", "127.0.0.1:1", None), Collector(),
                       processes=None, model=model)  # type: ignore[arg-type]
    fault = make(ctx)
    assert fault is not None
    with pytest.raises(FaultError, match="needs the bus: --transport amqp"):
        asyncio.run(fault.setup())


# case -> (harness run's arguments, what its one line must say, whether the run folder is kept): made from a
# fault's own FaultError, once when the fault is made (before the load: no folder) and once at its setup
# (after the warm-up: the folder keeps what was recorded)
REFUSALS = {
    "no such instance": (["--fault", "crash", "--fault-target", "nonesuch", "--fault-at", "time:1"],
                         "fault_target: 'nonesuch' is not an instance", False),
    "a broker fault off the bus": (["--fault", "broker-pause"], "fault broker-pause needs the bus", True),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_fault_that_does_not_fit_the_run_is_one_line_and_exit_2(case, tmp_path, capsys) -> None:
    argv, fragment, kept = REFUSALS[case]
    before = {p.pid for p in leftovers.processes(session=leftovers.this_session())}
    out = tmp_path / "out"
    proc = run_main(["run", "--design", "centralised", *argv, "--set", "requests=4", "--out", str(out)], capsys)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and fragment in lines[-1] and lines[-1].startswith("harness: "), proc.stderr
    assert out.exists() == kept
    assert {p.pid for p in leftovers.processes(session=leftovers.this_session())} <= before


def test_the_pure_floors_load_no_fault_code():
    """The record, the checker and the figures read the faults' contract (a target file's selection of
    instances, the model's view), never a fault's code: importing them loads neither the catalogue nor
    faults.base (faults/__init__ imports its names lazily)."""
    probe = ("import sys, harness.history.record, harness.measure.summary, harness.checker, harness.analysis.report\n"
             "print(sorted(m for m in sys.modules if m.startswith('faults')))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "'faults.contract'" in proc.stdout, proc.stdout  # the contract is read: the probe sees the package
    assert "faults.catalogue" not in proc.stdout and "faults.base" not in proc.stdout, proc.stdout
