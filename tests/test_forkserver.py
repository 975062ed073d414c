"""The local runtime's fork server: services forked from one preloaded interpreter keep every guarantee of one
exec per service (labels `harness clean` finds, own sessions, logs, exit codes, death with the server)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from harness.experiment.testbed import Testbed
from harness.runtime import leftovers
from harness.runtime.forkserver import ENV as FORKSERVER_ENV
from harness.runtime.forkserver import ForkServer
from harness.runtime.local import RUN_ENV, LocalRuntime
from tests.helpers import experiment, run


def test_a_forked_child_gets_its_args_env_log_session_and_exit_code(tmp_path: Path) -> None:
    """`python -m json.tool FILE`, forked: its output in its log, its exit code reported (also when it exits at
    once, before the runtime has seen it started), in a session of its own, with the variables it was given."""
    (tmp_path / "in.json").write_text('{"b": 1, "a": [2]}')
    probe = tmp_path / "probe.py"
    probe.write_text("import os, sys; print(os.environ['PROBE'], os.getsid(0) == os.getpid(), sys.argv[1:]); "
                     "sys.exit(7)")

    async def scenario() -> None:
        server = await ForkServer.start("json.tool", ["json.*"], dict(os.environ), tmp_path / "server.log")
        try:
            ok = await server.spawn("ok", {}, tmp_path / "ok.log", args=[str(tmp_path / "in.json")])
            bad = await server.spawn("bad", {}, tmp_path / "bad.log", args=[str(tmp_path / "missing.json")])
            assert await asyncio.wait_for(ok.wait(), 10) == 0 and ok.returncode == 0
            assert await asyncio.wait_for(bad.wait(), 10) not in (0, None)
            assert psutil.Process(server.pid).status() != psutil.STATUS_ZOMBIE, "the server outlives its children"
        finally:
            await server.close()
        assert server.proc.returncode == 0
        assert (tmp_path / "ok.log").read_text() == '{\n    "b": 1,\n    "a": [\n        2\n    ]\n}\n'
        assert "missing.json" in (tmp_path / "bad.log").read_text()

        server = await ForkServer.start("probe", [], {**os.environ, "PYTHONPATH": str(tmp_path)},
                                        tmp_path / "server2.log")
        try:
            child = await server.spawn("p", {"PROBE": "given"}, tmp_path / "p.log", args=["x", "y"])
            assert await asyncio.wait_for(child.wait(), 10) == 7
        finally:
            await server.close()
        assert (tmp_path / "p.log").read_text() == "given True ['x', 'y']\n"

    run(scenario())


slow = pytest.mark.slow


async def _up(tmp_path: Path) -> Testbed:
    tb = Testbed(experiment(design="centralised", n=3), tmp_path)
    await tb.__aenter__()
    return tb


@slow
def test_services_are_forked_labelled_and_reaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORKSERVER_ENV, raising=False)

    async def scenario() -> None:
        tb = await _up(tmp_path)
        try:
            runtime = tb.runtime
            assert isinstance(runtime, LocalRuntime) and runtime.forkserver is not None
            server = runtime.forkserver.proc.pid
            names = [s.id for s in tb.deployment.services]  # type: ignore[union-attr]
            pids = {name: runtime.pid(name) for name in names}
            for name, pid in pids.items():
                proc = psutil.Process(pid)
                assert proc.ppid() == server, name
                assert proc.environ()[RUN_ENV] == tb.run, "a forked service carries the run's label"
                assert os.getsid(pid) == pid, "each service leads a session of its own"
                assert (tmp_path / "logs" / f"{name}.log").exists()
            found = {p.pid for p in leftovers.processes(tb.run)}
            assert set(pids.values()) | {server} <= found, "harness clean would find services and server"
            reqs = await tb.bss.drive(2, users=2, timeout=30)
            await tb.bss.wait_all(reqs, timeout=30)
            assert all(tb.bss.completions.get(r) == 1 for r in reqs)
            victim = names[0]
            tb.kill(victim)
            assert await asyncio.wait_for(runtime.services[victim].wait(), 10) == -signal.SIGKILL
        finally:
            await tb.close()
        assert leftovers.processes(tb.run) == []

    run(scenario())


@slow
def test_services_die_with_the_fork_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the server (as when the harness above it is SIGKILLed): every service it forked dies too
    (PR_SET_PDEATHSIG) and the runtime hears of each one's end."""
    monkeypatch.delenv(FORKSERVER_ENV, raising=False)

    async def scenario() -> None:
        tb = await _up(tmp_path)
        try:
            runtime = tb.runtime
            assert isinstance(runtime, LocalRuntime) and runtime.forkserver is not None
            children = list(runtime.services.values())
            os.kill(runtime.forkserver.proc.pid, signal.SIGKILL)
            codes = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 10)
            assert codes == [-signal.SIGKILL] * len(children)
            deadline = time.monotonic() + 5
            while any(psutil.pid_exists(c.pid) and psutil.Process(c.pid).status() != psutil.STATUS_ZOMBIE
                      for c in children) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not [c.pid for c in children if psutil.pid_exists(c.pid)
                        and psutil.Process(c.pid).status() != psutil.STATUS_ZOMBIE]
        finally:
            await tb.close()
        assert leftovers.processes(tb.run) == []

    run(scenario())


@slow
def test_without_the_fork_server_each_service_is_its_own_interpreter(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FORKSERVER_ENV, "0")

    async def scenario() -> None:
        tb = await _up(tmp_path)
        try:
            runtime = tb.runtime
            assert isinstance(runtime, LocalRuntime) and runtime.forkserver is None
            for spec in tb.deployment.services:  # type: ignore[union-attr]
                assert psutil.Process(runtime.pid(spec.id)).ppid() == os.getpid()
        finally:
            await tb.close()
        assert leftovers.processes(tb.run) == []

    run(scenario())
