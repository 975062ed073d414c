"""A hostile neighbour on a live run's own network (docs/security.md): it tries every instrument without the
run's secret, forges a `completed` from "bss", sends `[1]` and binary junk to the collector, silences the SLMs
through /hb-now, cuts links through proxyd and (on a swarm) tries the agent's path injection. Everything must be
refused (403, or the connection dropped), counted in `Testbed.refused()`, and the run's verdict and figures
must be what they would be without it: pass, nothing lost or duplicated, every request completed once.

The neighbour is a real process (tests/hostile_probe.py): on the local runtime a process on the host, on the
docker runtime a container on the run's own bridge network.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import checker
from harness.experiment.testbed import Testbed
from harness.history import Collector, Event
from harness.load.locust_runner import LocustLoad
from harness.runtime import image, leftovers
from protocol import auth
from tests.helpers import experiment
from tests.hostile_probe import COLLECTOR_ATTEMPTS, FORGED_REQ
from tests.readme_runner import swarm_lock

PROBE = Path(__file__).with_name("hostile_probe.py")
REQUESTS, USERS = 6, 3


def targets(tb: Testbed, locust: bool = False) -> dict[str, Any]:
    """What the neighbour tries: every instrument's address (no secret: addresses are no secret)."""
    assert tb.deployment is not None and tb.wiring is not None
    ctl = tb.wiring.ctl  # type: ignore[attr-defined]
    return {
        "collector": tb.collector.address, "bss": tb.bss_address, "locust": locust,
        "hb": {s.id: f"{s.bind}:{s.ports['hb']}" for s in tb.deployment.services if "hb" in s.ports},
        "proxyd": f"{ctl.host}:{ctl.port}", "link": tb.wiring.links[0].name,  # type: ignore[attr-defined]
    }


async def probe_here(what: dict[str, Any]) -> dict[str, Any]:
    """The neighbour as a process of its own on this host."""
    proc = await asyncio.create_subprocess_exec(sys.executable, str(PROBE), json.dumps(what),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    result: dict[str, Any] = json.loads(out)
    return result


def all_refused(result: dict[str, Any], what: dict[str, Any]) -> None:
    assert result["collector"] == {name: True for name in COLLECTOR_ATTEMPTS}
    http = result["http"]
    assert http.pop("proxyd_health") == 200  # the one open route: it tells nothing that matters
    expected = {"bss_complete", "bss_complete_wrong_key", "bss_complete_list", "proxyd_links", "proxyd_cut",
                "proxyd_delay", "proxyd_reset"} | {f"{s}_{r}" for s in what["hb"] for r in ("hb_now", "release")}
    if what["locust"]:
        expected |= {"bss_go", "bss_warmup"}
    if what.get("agent"):
        expected |= {"agent_leave", "agent_kill", "agent_pause", "spec_server"}
    assert set(http) == expected
    assert http == dict.fromkeys(expected, 403)


def unchanged(tb: Testbed, events: list[Event], what: dict[str, Any]) -> None:
    """The run is what it would be without the neighbour, and every refusal was counted where it happened."""
    verdict = checker.verdict(events, holes={"collector_bad_lines": tb.collector.bad_lines},
                              evidence=checker.Evidence(expected_requests=REQUESTS))
    assert (verdict.status, verdict.requests, verdict.completed) == ("pass", REQUESTS, REQUESTS), verdict
    assert verdict.lost == [] and verdict.duplicated == {}
    assert tb.collector.bad_lines == 0  # the junk never got as far as a line of the history
    assert not [e for e in events if e.get("req") == FORGED_REQ or e["kind"] in ("peer_dead", "released")]
    assert not [e for e in events if e["kind"] == "hb_sent" and e.get("triggered")]
    assert [e["svc"] for e in events if e["kind"] == "fault"] == []
    refused = tb.refused()
    assert refused["collector"] == len(COLLECTOR_ATTEMPTS)
    assert refused["bss"] == 3 + (2 if what["locust"] else 0)
    assert refused["proxyd"] == 4
    assert refused["services"] == 2 * len(what["hb"])
    if what.get("agent"):
        assert (refused["agent"], refused["spec_server"]) == (3, 1)


@pytest.mark.slow
@pytest.mark.parametrize("locust", [False, True], ids=["builtin-bss", "locust-bss"])
def test_a_neighbour_on_the_local_runtime_is_refused_and_changes_nothing(tmp_path: Path, locust: bool) -> None:
    z = experiment(design="centralised", requests=REQUESTS, users=USERS)

    async def go() -> tuple[Testbed, dict[str, Any], dict[str, Any]]:
        async with Testbed(z, tmp_path, links_backend="proxy", external_bss=locust) as tb:
            what = targets(tb, locust)
            if locust:
                load = LocustLoad.for_testbed(tb, timeout=60)
                await load.start()
                await load.ready()
                result, _ = await asyncio.gather(probe_here(what), load.wait(90))
            else:
                async def drive() -> None:
                    reqs = await tb.bss.drive(REQUESTS, users=USERS, timeout=30)
                    await tb.bss.wait_all(reqs, timeout=30)

                result, _ = await asyncio.gather(probe_here(what), drive())
            await asyncio.sleep(0.1)
        return tb, what, result

    tb, what, result = asyncio.run(go())
    all_refused(result, what)
    unchanged(tb, tb.collector.events, what)


def test_the_collector_stores_only_event_objects_of_their_own_sender() -> None:
    """A sender with the right hello still cannot store `[1]`, an object without t/svc/kind, a NaN time, or an
    event of another sender: bad lines and refusals are counted, and the good events around them are kept."""
    secret = auth.new_secret()

    async def go() -> Collector:
        collector = Collector(secret=secret)
        host, _, port = (await collector.start()).rpartition(":")
        _, writer = await asyncio.open_connection(host, int(port))
        good = {"t": 1.5, "wall": 1.0, "svc": "slm-a", "kind": "hb_sent", "seq": 1}
        lines = [auth.hello("slm-a", auth.key(secret, "slm-a")), b"[1]\n", b'{"t": 1}\n', b"\xff\xfe\n",
                 b'{"t": NaN, "svc": "slm-a", "kind": "x"}\n', json.dumps(good).encode() + b"\n",
                 json.dumps({**good, "svc": "bss", "kind": "completed"}).encode() + b"\n",
                 json.dumps({**good, "svc": "harness", "kind": "down"}).encode() + b"\n",
                 json.dumps({**good, "seq": 2}).encode() + b"\n"]
        writer.write(b"".join(lines))
        await writer.drain()
        for _ in range(200):
            if len(collector.events) == 2:
                break
            await asyncio.sleep(0.01)
        writer.close()
        # a second hello on a connection is no way to change sender
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(auth.hello("slm-a", auth.key(secret, "slm-a")) + auth.hello("bss", auth.key(secret, "bss")))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await collector.close()
        return collector

    collector = asyncio.run(go())
    assert [e["seq"] for e in collector.events] == [1, 2]
    assert (collector.bad_lines, collector.refused) == (4, 3)


needs_docker = pytest.mark.skipif(not image.available()[0], reason="no Docker here")


@needs_docker
@pytest.mark.docker
@pytest.mark.slow
def test_a_container_on_the_run_s_bridge_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    from harness.runtime import engine
    from harness.runtime.docker import DockerRuntime, labels

    z = experiment(design="centralised", requests=REQUESTS, users=USERS, runtime="docker")
    source = PROBE.read_text(encoding="utf-8")

    def in_container(rt: DockerRuntime, what: dict[str, Any]) -> dict[str, Any]:
        """The neighbour as a container of the run's image on the run's bridge, labelled as the run's."""
        container = engine.client().containers.run(rt.image, ["python3", "-c", source, json.dumps(what)],
                                                   network=rt.network, labels={**labels(rt.run), "hostile": "1"},
                                                   detach=True)
        try:
            assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
            result: dict[str, Any] = json.loads(container.logs(stdout=True, stderr=False))
            return result
        finally:
            container.remove(force=True)

    async def go() -> tuple[Testbed, dict[str, Any], dict[str, Any]]:
        async with Testbed(z, tmp_path, links_backend="proxy") as tb:
            assert isinstance(tb.runtime, DockerRuntime)
            what = targets(tb)

            async def drive() -> None:
                reqs = await tb.bss.drive(REQUESTS, users=USERS, timeout=30)
                await tb.bss.wait_all(reqs, timeout=30)

            result, _ = await asyncio.gather(asyncio.to_thread(in_container, tb.runtime, what), drive())
            await asyncio.sleep(0.1)
        return tb, what, result

    tb, what, result = asyncio.run(go())
    assert leftovers.docker_objects(run=tb.run) == []
    all_refused(result, what)
    unchanged(tb, tb.collector.events, what)


@needs_docker
@pytest.mark.docker
@pytest.mark.slow
def test_a_container_on_the_run_s_overlay_is_refused_by_the_agent_too(tmp_path: Path) -> None:
    """On a one-node swarm (made here and left again if the Engine was in none, as tests/test_swarm.py does): a
    container attached to the run's overlay tries everything above, plus the agent's path injection, a kill of a
    random hex id and a pause of a real service's container without the key, and fetching a spec. With the key,
    the agent still refuses what is not a hex id or not a container of this run, and serves what is."""
    import urllib.error
    import urllib.request

    from harness.runtime import engine, swarm_agent
    from harness.runtime.docker import labels
    from harness.runtime.swarm import SPEC_PORT, SwarmRuntime

    z = experiment(design="centralised", requests=REQUESTS, users=USERS, runtime="swarm")
    source = PROBE.read_text(encoding="utf-8")
    client = engine.client()

    def agent_status(rt: SwarmRuntime, agent: str, container: str) -> int:
        url = f"http://{agent}/stats?container={container}"
        request = urllib.request.Request(url, headers={auth.HEADER: rt.agent_key})
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    made: list[Any] = []

    def in_container(rt: SwarmRuntime, what: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The neighbour on the run's overlay, labelled (for clean-up) as of another run; kept (stopped) until
        the end, so the agent can be asked about a container of another run."""
        mark = {**labels(rt.run), "manobench.run": f"not-{rt.run}"}
        assert rt.image
        container = client.containers.run(rt.image, ["python3", "-c", source, json.dumps(what)],
                                          network=rt.network, labels=mark, detach=True)
        made.append(container)
        assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
        result: dict[str, Any] = json.loads(container.logs(stdout=True, stderr=False))
        return result, str(container.id)

    async def go() -> tuple[Testbed, dict[str, Any], dict[str, Any], dict[str, int]]:
        async with Testbed(z, tmp_path, links_backend="proxy") as tb:
            rt = tb.runtime
            assert isinstance(rt, SwarmRuntime)
            agent = f"{next(iter(rt.agents.values()))}:{swarm_agent.AGENT_PORT}"
            victim = rt.tasks["slm-a"].container
            what = {**targets(tb), "agent": agent, "victim": victim, "spec": f"{rt.gateway}:{SPEC_PORT}"}

            async def drive() -> None:
                reqs = await tb.bss.drive(REQUESTS, users=USERS, timeout=30)
                await tb.bss.wait_all(reqs, timeout=30)

            (result, foreign), _ = await asyncio.gather(asyncio.to_thread(in_container, rt, what), drive())
            keyed = {"leave": await asyncio.to_thread(agent_status, rt, agent, "../../swarm/leave?force=true&x="),
                     "foreign": await asyncio.to_thread(agent_status, rt, agent, foreign),
                     "own": await asyncio.to_thread(agent_status, rt, agent, victim)}
            await asyncio.sleep(0.1)
        return tb, what, result, keyed

    with swarm_lock():  # machine-wide: no other test inits or leaves the swarm meanwhile (tests/readme_runner.py)
        state = client.info().get("Swarm", {}).get("LocalNodeState", "")
        if state not in ("inactive", "active"):
            pytest.skip(f"the Engine's swarm is {state}: neither usable nor ours to change")
        networks = {n["Name"] for n in client.api.networks()}
        if state == "inactive":
            client.swarm.init(advertise_addr="127.0.0.1")
        try:
            tb, what, result, keyed = asyncio.run(go())
        finally:
            for container in made:
                container.remove(force=True)
            if state == "inactive":
                client.swarm.leave(force=True)
                if "docker_gwbridge" not in networks:
                    client.api.remove_network("docker_gwbridge")
    assert leftovers.docker_objects(run=tb.run) == []
    all_refused(result, what)
    assert keyed == {"leave": 403, "foreign": 403, "own": 200}
    refused = tb.refused()
    refused["agent"] -= 2  # the harness-side checks above: the injection and the foreign container
    tb.refused = lambda: refused  # type: ignore[method-assign]
    unchanged(tb, tb.collector.events, what)


def test_keys_are_per_name_and_a_spec_carries_only_its_own() -> None:
    """Each name's key differs and none is the secret; a spec with no key (a hand-started service) leaves the
    field out of its JSON, so the checked-in compose files stay as they are."""
    from protocol.spec import ServiceSpec

    secret = auth.new_secret()
    keys = {name: auth.key(secret, name) for name in ("slm-a", "slm-b", auth.BSS, auth.CONTROL)}
    assert len(set(keys.values())) == 4 and secret not in keys.values()
    assert auth.key(auth.new_secret(), "slm-a") != keys["slm-a"]  # another run, another key
    assert auth.matches(keys["slm-a"], keys["slm-a"]) and not auth.matches(keys["slm-a"], keys["slm-b"])
    assert not auth.matches(keys["slm-a"], None) and not auth.matches(keys["slm-a"], 7)
    spec = ServiceSpec("slm-a", "slm", "r", "127.0.0.2", {"op": 8000}, {})
    assert "secret" not in json.loads(spec.to_json())
    spec.secret = keys["slm-a"]
    assert ServiceSpec.from_json(spec.to_json()).secret == keys["slm-a"]


def test_the_overlay_is_encrypted_only_where_the_kernel_has_ipsec(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.runtime import swarm_nodes

    for forced, state in (("1", "on"), ("0", "off")):
        monkeypatch.setenv(swarm_nodes.ENCRYPTION_ENV, forced)
        assert swarm_nodes.overlay_encryption() == (state, f"{swarm_nodes.ENCRYPTION_ENV}={forced}")
    monkeypatch.delenv(swarm_nodes.ENCRYPTION_ENV)
    state, why = swarm_nodes.overlay_encryption()
    if all(Path(f"/sys/module/{m}").exists() for m in ("esp4", "xfrm_user")):  # loaded: certainly there
        assert state == "on", why
    elif state == "off":  # this machine (6.18, neither): the missing module is named
        assert "(IPsec)" in why and ("esp4" in why or "xfrm_user" in why), why
