"""Suite-wide guarantees: nothing the harness starts outlives the test suite."""

from __future__ import annotations

import os
import uuid

import pytest

from harness.runtime import leftovers
from harness.runtime.local import SESSION_ENV

SESSION = os.environ.setdefault(SESSION_ENV, uuid.uuid4().hex)  # inherited by every run the suite starts
if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker a session of its own: its runs reap only its own orphans
    SESSION = os.environ[SESSION_ENV] = f"{SESSION}-{os.environ['PYTEST_XDIST_WORKER']}"


@pytest.fixture(scope="session", autouse=True)
def no_process_survives_the_suite():
    """Fails the run (as a teardown error) if any process this suite started is still alive at the end."""
    yield
    survivors = leftovers.processes(session=SESSION)
    objects = leftovers.docker_objects(session=SESSION)
    if survivors:
        names = [" ".join(p.cmdline())[:80] for p in survivors]
        leftovers.end(survivors)
        pytest.fail(f"{len(survivors)} process(es) survived the test suite: {names}")
    if objects:
        leftovers.remove_docker(objects)
        pytest.fail(f"{len(objects)} container(s)/network(s) survived the test suite: {objects}")


# the longest files (wall s on 2 cores, 2026-12-05), scheduled first: `make test` hands whole files to two
# workers in collection order (--no-loadscope-reorder), so the suite does not end on one long file running
# alone (test_tacker.py, 3 tests and 4 minutes, did: 15.7 min in all)
LONGEST_FIRST = ("test_tacker.py", "test_transport.py", "test_run.py", "test_fit_report.py", "test_target_runs.py",
                 "test_readme.py", "test_readme_bus_swarm_sweep.py", "test_swarm.py", "test_sweep_docker.py",
                 "test_fenced.py", "test_worst_case.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
