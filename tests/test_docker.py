"""The docker runtime: images, compose files, `harness run --runtime docker`, leftovers, the cross-checks.

The first tests need no Docker (rendering, the SDK translation, the address check, no Engine); the rest are
marked `docker` and skip only where no Docker daemon answers. Everything created carries `manobench.session`
= this test session, and the module checks at its end that none of it is left.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import history
from harness.links.netem import probe_netem
from harness.links.spec import BRIDGE_NETS_ENV, check_loopback
from harness.measure.summary import SUMMARY_COLUMNS
from harness.plan import config
from harness.runtime import compose, engine, image, leftovers
from harness.runtime.docker import KILL_ENV, DockerRuntime, free_block
from harness.runtime.local import SESSION_ENV
from tests.helpers import assert_reanalysis_reproduces

ROOT = Path(__file__).resolve().parents[1]
SESSION = os.environ.get(SESSION_ENV, "")
FAST = ("--set", "n=4", "--set", "t_i=2", "--requests", "6", "--users", "3")

docker_ok, docker_why = image.available()
needs_docker = pytest.mark.skipif(not docker_ok, reason=f"no Docker here: {docker_why}")


def mine() -> list[dict[str, str]]:
    return leftovers.docker_objects(session=SESSION) if docker_ok and SESSION else []


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind():
    yield
    left = mine()
    if left:
        leftovers.remove_docker(left)
        pytest.fail(f"docker objects left behind by this module: {[o['name'] for o in left]}")


# --- no Docker needed -------------------------------------------------------------------------------------

def test_checked_in_compose_files_are_what_render_makes():
    for design, transport in [(d, "http") for d in ("monolith", "centralised", "distributed")] + [
            ("centralised", "amqp"), ("distributed", "amqp")]:  # the bus variants carry the broker
        z = config.load(design=design, transport=transport)
        name = compose.standalone_name(z)
        assert (ROOT / "compose" / f"{name}.yml").read_text() == compose.render_standalone(z), (
            f"compose/{name}.yml is stale: run `harness compose render`")


def test_render_gives_each_service_its_address_labels_and_limits():
    z = config.load(design="centralised")
    rt = DockerRuntime("abc123", Path("/nonexistent"), block="10.250.7", cpus=0.5, memory="256m")
    from harness.plan.deploy import plan

    dep = plan(z, "abc123", rt.host_of, f"{rt.gateway}:8100", f"{rt.gateway}:9")
    rt.image = "manobench-target:test"
    doc = compose.render(dep.services, image=rt.image, network=rt.network, subnet=rt.subnet, gateway=rt.gateway,
                         external=True, labels=rt.labels, cpus=0.5, memory="256m")
    assert doc["networks"] == {rt.network: {"external": True}}
    assert set(doc["services"]) == {s.id for s in dep.services}
    addrs = {svc["networks"][rt.network]["ipv4_address"] for svc in doc["services"].values()}
    assert len(addrs) == len(dep.services) and rt.gateway not in addrs
    slm = doc["services"]["slm-a"]
    assert slm["labels"]["manobench.run"] == "abc123" and slm["labels"]["manobench.owner"] == str(os.getpid())
    assert slm["cpus"] == 0.5 and slm["mem_limit"] == "256m"
    assert json.loads(slm["environment"]["MANOBENCH_SPEC"])["bind"] == rt.host_of("slm-a")
    assert rt.host_of("bss") == rt.host_of("proxies") == rt.gateway == "10.250.7.1"
    assert rt.bridge == "mbabc123" and len(rt.bridge) <= 15


def test_proxy_addresses_may_be_on_a_bridge_of_this_run_only(monkeypatch):
    check_loopback("127.0.0.1")
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("10.250.7.1")
    monkeypatch.setenv(BRIDGE_NETS_ENV, "10.250.7.0/24")
    check_loopback("10.250.7.1")
    with pytest.raises(ValueError):
        check_loopback("10.250.8.1")
    monkeypatch.setenv(BRIDGE_NETS_ENV, "8.8.8.0/24")  # never a public range
    with pytest.raises(ValueError):
        check_loopback("8.8.8.8")


def test_free_block_overlaps_nothing_on_the_host():
    from ipaddress import IPv4Network

    from harness.runtime.docker import _taken_networks

    net = IPv4Network(f"{free_block()}.0/24")
    assert not any(net.overlaps(t) for t in _taken_networks())


def test_containers_are_created_from_the_compose_document_itself():
    """The SDK's create arguments are a translation of the run's compose document, key by key, with compose's
    labels so the compose CLIs see the containers as theirs; a key with no translation is refused."""
    z = config.load(design="centralised")
    rt = DockerRuntime("abc123", Path("/nonexistent"), block="10.250.7", cpus=0.5, memory="256m")
    from harness.plan.deploy import plan

    dep = plan(z, "abc123", rt.host_of, f"{rt.gateway}:8100", f"{rt.gateway}:9")
    doc = compose.render(dep.services, image="manobench-target:test", network=rt.network, subnet=rt.subnet,
                         gateway=rt.gateway, external=True, labels=rt.labels, cpus=0.5, memory="256m")
    doc["services"]["slm-a"]["environment"]["MANOBENCH_SPEC"] = '{"a": "$$HOME"}'  # compose's escape of $
    args = compose.container_args(doc, "slm-a", rt.project, "1.41")
    assert args["name"] == "mbabc123-slm-a-1" and args["image"] == "manobench-target:test"
    assert args["command"] == ["python3", "-m", "targets"] and args["environment"]["MANOBENCH_SPEC"] == '{"a": "$HOME"}'
    assert args["labels"][compose.PROJECT_LABEL] == rt.project and args["labels"][compose.SERVICE_LABEL] == "slm-a"
    assert args["labels"]["manobench.run"] == "abc123" and args["labels"]["manobench.role"] == "slm"
    endpoint = args["networking_config"]["EndpointsConfig"][rt.network]
    assert endpoint["IPAMConfig"]["IPv4Address"] == rt.host_of("slm-a")
    host = args["host_config"]
    assert host["NetworkMode"] == rt.network and host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 2**20
    assert args["stop_timeout"] == 2
    doc["services"]["slm-a"]["volumes"] = ["/x:/x"]
    with pytest.raises(ValueError, match="volumes"):
        compose.container_args(doc, "slm-a", rt.project, "1.41")


def test_no_engine_is_one_line_and_no_leftovers(tmp_path):
    """DOCKER_HOST naming a socket where no Engine listens: a one-line error (exit 2) for `harness image
    build`, nothing to clean for `harness clean`, and the reason the docker tests would give for a skip."""
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    build = harness("image", "build", timeout=60, env=env)
    assert build.returncode == 2 and "Traceback" not in build.stderr, build.stderr
    (line,) = build.stderr.strip().splitlines()
    assert "image: no Docker daemon" in line, line
    probe = subprocess.run([sys.executable, "-c", "from harness.runtime import image, leftovers; "
                            "print(image.available()[0], leftovers.docker_objects())"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **env})
    assert probe.stdout.split() == ["False", "[]"], probe.stderr


# --- with Docker --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built_image() -> str:
    if not docker_ok:
        pytest.skip(docker_why)
    return image.build(say=lambda _m: None).tag


@needs_docker
@pytest.mark.docker
def test_a_second_build_with_nothing_changed_takes_seconds(built_image):
    t0 = time.monotonic()
    info = image.build(say=lambda _m: None)
    assert info.cached and info.tag == built_image
    assert time.monotonic() - t0 < 10


@needs_docker
@pytest.mark.docker
def test_a_rootfs_is_imported_with_its_dockerfile_changes(tmp_path, built_image):
    """The debootstrap base's import path, on a one-file root: the Engine gets the tarball and the changes."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hello").write_text("hi\n")
    tag = f"manobench-import-test:{os.getpid()}"
    try:
        image.import_rootfs(rootfs, tag, image.BASE_CHANGES)
        config_ = engine.client().api.inspect_image(tag)["Config"]
        assert config_["Labels"] == {"manobench": "1", "manobench.image": "base"} and config_["Cmd"] == ["python3"]
        assert not (tmp_path / "rootfs.tar").exists()
    finally:
        if image.exists(tag):
            engine.client().images.remove(tag)


def harness(*args: str, timeout: float = 400, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, built_image) -> Path:
    return tmp_path_factory.mktemp("docker-runs")


def _header(path: Path) -> list[str]:
    with path.open() as fh:
        return next(csv.reader(fh))


def _summary(out: Path) -> dict[str, str]:
    with (out / "summary.csv").open() as fh:
        return next(csv.DictReader(fh))


LOCAL_FILES = {"config.yaml", "events.jsonl", "requests.csv", "links.csv", "cpu.csv", "summary.csv", "affected.csv",
               "load.json", "wire.csv"}


@pytest.fixture(scope="module")
def local_centralised(runs) -> Path:
    out = runs / "local-centralised"
    proc = harness("run", "--out", str(out), "--design", "centralised", "--fault", "slm-crash", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@needs_docker
@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("design,fault", [("centralised", "slm-crash"), ("distributed", "slm-crash"),
                                          ("monolith", "none")])
def test_harness_run_docker_gives_the_local_files_and_columns(runs, local_centralised, design, fault):
    out = runs / f"docker-{design}"
    proc = harness("run", "--runtime", "docker", "--out", str(out), "--design", design, "--fault", fault, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    files = {p.name for p in out.iterdir()}
    assert files >= LOCAL_FILES and {"compose.yml", "containers.csv"} <= files
    local = {p.name for p in local_centralised.iterdir() if p.is_file()}
    assert local <= files | {"links.json"}, local - files
    for name in ("summary.csv", "cpu.csv", "requests.csv", "affected.csv"):
        assert _header(out / name) == _header(local_centralised / name), name
    if (out / "links.csv").stat().st_size and (local_centralised / "links.csv").stat().st_size and design != "monolith":
        assert _header(out / "links.csv") == _header(local_centralised / "links.csv")
    assert _header(out / "summary.csv") == SUMMARY_COLUMNS
    row = _summary(out)
    assert row["runtime"] == "docker" and row["lost"] == "0" and row["completed"] == "6"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    expected = "netem" if probe_netem().available else "proxy"  # auto: netem where the kernel has it
    assert cfg["runtime"] == "docker" and cfg["link_backend"] == expected and "bridge" in cfg["wire_capture"]
    with (out / "containers.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["service"] for r in rows} == {s for s in json.loads(
        next(line for line in (out / "events.jsonl").read_text().splitlines() if '"deploy"' in line))["services"]}
    for r in rows:  # cgroup accounting against the process's own CPU counters (cpuacct.usage is exact)
        if float(r["cgroup_total_s"]) > 0.1:
            assert 0.8 < float(r["cpu_agreement"]) < 1.25, r
    _veth_matches_the_capture(out, rows)
    assert not [o for o in mine() if o["run"] == row["run"]]
    assert_reanalysis_reproduces(out, runs / "moved" / out.name, restore=True)


def _veth_matches_the_capture(out: Path, rows: list[dict[str, str]]) -> None:
    """What each container sent, by its host-side veth, against the bridge capture's IP bytes from its address."""
    compose_doc = yaml.safe_load((out / "compose.yml").read_text())
    (net,) = compose_doc["networks"]
    addr = {name: svc["networks"][net]["ipv4_address"] for name, svc in compose_doc["services"].items()}
    with (out / "wire.csv").open() as fh:
        flows = list(csv.DictReader(fh))
    for r in rows:
        sent = [f for f in flows if f["src"] == addr[r["service"]]]
        wire = sum(int(f["ip_bytes"]) + 14 * int(f["packets"]) for f in sent)  # + Ethernet header per frame
        veth = int(r["veth_rx_bytes"])
        assert wire <= veth * 1.02 and wire >= veth * 0.85, (r["service"], wire, veth)  # veth also carries ARP


@needs_docker
@pytest.mark.docker
@pytest.mark.slow
def test_local_and_docker_agree_on_t_c(runs, local_centralised):
    """The same z, local processes vs containers: nothing lost, t_c within 15%."""
    docker_out = runs / "docker-centralised"
    if not (docker_out / "summary.csv").exists():
        proc = harness("run", "--runtime", "docker", "--out", str(docker_out), "--design", "centralised",
                       "--fault", "slm-crash", *FAST)
        assert proc.returncode == 0, proc.stderr[-3000:]
    local, docker = _summary(local_centralised), _summary(docker_out)
    assert local["lost"] == docker["lost"] == "0"
    t_local, t_docker = float(local["t_c_measured"]), float(docker["t_c_measured"])
    assert abs(t_docker - t_local) / t_local < 0.15, (t_local, t_docker)


@needs_docker
@pytest.mark.docker
@pytest.mark.slow
def test_sigkilled_harness_leaves_containers_that_the_next_run_removes(tmp_path, built_image):
    argv = [sys.executable, "-m", "harness", "run", "--runtime", "docker", "--out", str(tmp_path / "killed"),
            "--load", "builtin", "--set", "n=4", "--requests", "200", "--users", "2"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        events = tmp_path / "killed" / "events.jsonl"
        while time.monotonic() < deadline and not (events.exists() and '"ready"' in events.read_text()):
            assert proc.poll() is None, "harness ended before it was ready"
            time.sleep(0.2)
        assert '"ready"' in events.read_text()
        run = yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())["run"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = leftovers.docker_objects(run=run)
    kinds = {o["kind"] for o in left}
    assert kinds == {"container", "network"}, left
    assert leftovers.docker_objects(run=run, orphans=True) == left  # the owner is dead: leftovers
    # the next run removes them (its own monolith-only run is quick), networks included
    nxt = harness("run", "--runtime", "docker", "--design", "monolith", "--load", "builtin", "--requests", "2",
                  "--out", str(tmp_path / "next"))
    assert nxt.returncode == 0, nxt.stderr[-2000:]
    assert "leftover container" in nxt.stdout + nxt.stderr
    assert leftovers.docker_objects(run=run) == []


@needs_docker
@pytest.mark.docker
def test_clean_removes_orphaned_containers_and_networks_but_not_live_ones(built_image):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that is gone: an owner that died
    made = []
    for owner, tag in ((str(dead.pid), "orphan"), (str(os.getpid()), "live")):
        run = f"test{tag}{os.getpid()}"
        lab = {"manobench": "1", "manobench.run": run, "manobench.owner": owner, "manobench.session": SESSION}
        made.append(run)
        engine.client().networks.create(f"mb{run}", internal=True, labels=lab)
        engine.client().containers.create(built_image, "true", labels=lab, network=f"mb{run}")
    try:
        out = harness("clean", timeout=120)
        assert out.returncode == 0, out.stderr
        assert leftovers.docker_objects(run=made[0]) == []
        assert {o["kind"] for o in leftovers.docker_objects(run=made[1])} == {"container", "network"}
        assert "container" in out.stdout and "network" in out.stdout
    finally:
        for run in made:
            leftovers.remove_docker(leftovers.docker_objects(run=run))


@needs_docker
@pytest.mark.docker
@pytest.mark.slow
def test_containers_match_their_record_pause_freezes_and_kill_ends_them(tmp_path, built_image):
    """One deployment: each container is what compose.yml says (image, spec, address, labels) and the compose
    CLI sees it as its own; pause by the freezer and by the Engine; the crash by a direct SIGKILL and by the
    Engine's kill, both leaving exit 137 as `docker kill` does; teardown saves logs and removes everything."""
    import asyncio

    from harness.experiment.testbed import Testbed

    z = config.build({"runtime": "docker", "design": "centralised", "n": 2, "time_scale": 0.1})
    api = engine.client().api

    async def go() -> str:
        async with Testbed(z, tmp_path) as tb:
            rt = tb.runtime
            assert isinstance(rt, DockerRuntime)
            record = yaml.safe_load(rt.compose_file.read_text())
            assert set(record["services"]) == set(rt.containers) == {"slm-a", "slm-b", "m1", "m2"}
            for name, c in rt.containers.items():
                svc, info = record["services"][name], api.inspect_container(c.id)
                assert info["Config"]["Image"] == svc["image"] == rt.image
                (spec,) = [e.split("=", 1)[1] for e in info["Config"]["Env"] if e.startswith("MANOBENCH_SPEC=")]
                recorded = json.loads(svc["environment"]["MANOBENCH_SPEC"].replace("$$", "$"))
                live = json.loads(spec)
                assert live.pop("secret") and live == recorded  # the record leaves the service's key out
                assert info["NetworkSettings"]["Networks"][rt.network]["IPAddress"] == rt.host_of(name)
                assert svc["labels"].items() <= info["Config"]["Labels"].items()
                assert c.here and c.veth and info["State"]["Pid"] == c.pid
            if shutil.which("docker-compose"):
                ps = subprocess.run(["docker-compose", "-p", rt.project, "-f", str(rt.compose_file), "ps", "-q"],
                                    capture_output=True, text=True, timeout=60, check=False)
                assert set(ps.stdout.split()) == {c.id for c in rt.containers.values()}, ps.stderr
            assert not rt.log_tail("m1").startswith("(no log")  # events go to the collector: the log may be empty
            m1 = rt.containers["m1"]
            rt.pause("m1")
            state = m1.cgroup.freezer.read_text().strip() if m1.cgroup.freezer else ""
            assert state in ("FROZEN", "FREEZING", "1"), state
            rt.resume("m1")
            assert m1.cgroup.freezer and m1.cgroup.freezer.read_text().strip() in ("THAWED", "0")
            m1.cgroup.freezer = None  # no freezer file: the Engine's pause
            rt.pause("m1")
            assert api.inspect_container(m1.id)["State"]["Paused"]
            rt.resume("m1")
            assert not api.inspect_container(m1.id)["State"]["Paused"]
            rt.kill("slm-a")
            os.environ[KILL_ENV] = "docker"
            try:
                rt.kill("m2")
            finally:
                del os.environ[KILL_ENV]
            for name in ("slm-a", "m2"):
                assert api.wait(rt.containers[name].id, timeout=30)["StatusCode"] == 137  # what `docker kill` leaves
            assert rt.timings["ready"] > 0
            return tb.run

    run = asyncio.run(go())
    assert leftovers.docker_objects(run=run) == []
    assert {p.name for p in (tmp_path / "logs").glob("*.log")} >= {f"{s}.log" for s in ("slm-a", "slm-b", "m1", "m2")}
    assert (tmp_path / "containers.csv").read_text().count("\n") == 5


@needs_docker
@pytest.mark.docker
@pytest.mark.slow
def test_a_partition_through_tc_inside_the_containers(runs):
    """The netem backend's whole tc wiring in real containers: per-link classes and filters installed with
    nsenter, and the partition cut by blackhole filters. Leaves are pfifo (no delay) where the kernel lacks
    sch_netem, as here; where it has it, the same run uses netem leaves."""
    out = runs / "docker-tc-partition"
    env = {} if probe_netem().available else {"MANOBENCH_NETEM_LEAF": "pfifo"}
    proc = harness("run", "--runtime", "docker", "--out", str(out), "--design", "centralised", "--fault",
                   "partition", "--set", "link_backend=netem", *FAST, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["link_backend"] == "netem" and "network namespace" in cfg["link_backend_why"]
    row = _summary(out)
    assert row["lost"] == "0" and row["completed"] == "6"
    # no proxy in between: each link's bytes come from the bridge capture, told apart by who dials
    assert row["wire_source"] == "wire" and abs(float(row["wire_vs_service_op"])) < 0.05, row
    events = history.read(out / "events.jsonl")
    assert [e for e in events if e["kind"] == "links_shaped"]
    cut = next(e for e in events if e["svc"] == "harness" and e["kind"] == "fault" and e["action"] == "cut")
    healed = next(e for e in events if e["svc"] == "harness" and e["kind"] == "fault" and e["action"] == "heal")
    dead = [e for e in events if e["kind"] == "peer_dead" and cut["t"] <= e["t"] <= healed["t"] + 1]
    assert {e["svc"] for e in dead} == {"slm-a", "slm-b"}, "both sides of the cut suspect the other"
    assert not [o for o in mine() if o["run"] == row["run"]]
