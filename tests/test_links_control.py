"""Link control: the link spec, proxyd (the proxies' own process and its control API) and the netem probe,
with real sockets and processes (the proxy itself: tests/test_links_proxy.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from harness.errors import UserError
from harness.links import (
    LinkSpec,
    ProxyControl,
    ProxyControlError,
    choose_backend,
    dump_specs,
    launch_proxyd,
    probe_netem,
)
from harness.links.spec import parse_specs
from tests.link_timing import EARLY_SLACK, LATE_SLACK, LO

REPO = Path(__file__).resolve().parents[1]


# --- link spec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"name": "a", "listen": "10.0.0.1:1", "target": "127.0.0.1:2"}, "loopback"),
        ({"name": "a", "listen": "127.0.0.1:1", "target": "example.com:2"}, "loopback"),
        ({"name": "a", "listen": "127.0.0.1:1", "target": "127.0.0.1:99999"}, "range"),
        ({"name": "a", "listen": "127.0.0.1:1", "target": "127.0.0.1:2", "plane": "Ctl!"}, "plane"),
        ({"name": "a", "listen": "127.0.0.1:1", "target": "127.0.0.1:2", "delay_fwd": -0.1}, "delay_fwd"),
        ({"name": "a", "listen": "127.0.0.1:1", "target": "127.0.0.1:2", "color": 1}, "unknown"),
    ],
)
def test_spec_rejects_bad_links(item: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_specs([item])


def test_spec_round_trips_and_rejects_duplicates(tmp_path: Path) -> None:
    specs = [LinkSpec("a", (LO, 0), (LO, 5), 0.01, 0.02, 0.001, "hb"), LinkSpec("b", ("::1", 0), (LO, 6))]
    dump_specs(specs, tmp_path / "s.json")
    assert parse_specs(json.loads((tmp_path / "s.json").read_text())) == specs
    with pytest.raises(ValueError, match="duplicate"):
        parse_specs([specs[0].to_dict(), specs[0].to_dict()])


# --- proxyd -----------------------------------------------------------------------------------------


def _raw_post(ctl: ProxyControl, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(ctl.base + path, data=body, method="POST",
                                 headers={"X-Manobench-Secret": ctl.secret or ""})
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _echo_server() -> tuple[socket.socket, int]:
    """A threaded blocking echo server, since the proxyd tests have no event loop of their own."""
    import threading

    srv = socket.create_server((LO, 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def _rtt(sock: socket.socket) -> float:
    start = time.perf_counter()
    sock.sendall(b"ping")
    got = b""
    while len(got) < 4:
        got += sock.recv(4 - len(got))
    return time.perf_counter() - start


@pytest.fixture
def proxyd(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv, port = _echo_server()
    specs = [
        LinkSpec("nfvo->vnfm.op", (LO, 0), (LO, port), delay_fwd=0.01, plane="op"),
        LinkSpec("vnfm>nfvo:hb", (LO, 0), (LO, port), delay_rev=0.005, plane="hb"),
    ]
    dump_specs(specs, tmp_path / "links.json")
    proc, ctl, info = launch_proxyd(tmp_path / "links.json", ready_file=tmp_path / "ready.json")
    try:
        yield proc, ctl, info
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        srv.close()


@pytest.mark.slow
def test_proxyd_serves_links_and_takes_control(proxyd) -> None:  # type: ignore[no-untyped-def]
    proc, ctl, info = proxyd
    links = ctl.links()
    assert set(links) == {"nfvo->vnfm.op", "vnfm>nfvo:hb"}
    op = links["nfvo->vnfm.op"]
    assert op["plane"] == "op" and op["delay_fwd"] == 0.01 and op["cut"] is False
    assert op["listen"] == info["links"]["nfvo->vnfm.op"] and not str(op["listen"]).endswith(":0")
    port = int(str(op["listen"]).rpartition(":")[2])

    with socket.create_connection((LO, port)) as sock:
        assert 0.01 - EARLY_SLACK <= min(_rtt(sock) for _ in range(5)) <= 0.01 + LATE_SLACK
        state = ctl.set("nfvo->vnfm.op", delay_fwd=0.03, jitter=0.0)
        assert state["delay_fwd"] == 0.03
        assert min(_rtt(sock) for _ in range(2)) >= 0.03 - EARLY_SLACK
        assert ctl.cut("nfvo->vnfm.op")["cut"] is True
        sock.sendall(b"held")
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4)
        assert ctl.heal("nfvo->vnfm.op")["cut"] is False
        sock.settimeout(2)
        assert sock.recv(4) == b"held"
        counts = ctl.link("nfvo->vnfm.op")
        assert counts["bytes_fwd"] == counts["bytes_rev"] == 4 * (5 + 2 + 1)  # pings and "held"
        assert counts["connections"] == 1
        assert ctl.reset("nfvo->vnfm.op") == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(1)

    with pytest.raises(ProxyControlError) as missing:
        ctl.set("no-such-link", delay_fwd=0.1)
    assert missing.value.status == 404
    with pytest.raises(ProxyControlError) as neg:
        ctl.set("nfvo->vnfm.op", delay_rev=-1)
    assert neg.value.status == 400 and "delay_rev" in str(neg.value)
    for body in (b"{not json", b"[1]", b'{"cut": "yes"}', b'{"delay": 1}', b'{"delay_fwd": 1, "jitter": -1}'):
        status, answer = _raw_post(ctl, "/links/nfvo->vnfm.op", body)
        assert status == 400 and "error" in answer, body
    assert ctl.link("nfvo->vnfm.op")["delay_fwd"] == 0.03  # the rejected update changed nothing
    assert _raw_post(ctl, "/links/nope/reset", b"{}")[0] == 404
    hb = ctl.set("vnfm>nfvo:hb", delay_rev=0.002, cut=True)
    assert (hb["plane"], hb["delay_rev"], hb["cut"]) == ("hb", 0.002, True)

    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert time.monotonic() - start < 2
    assert not psutil.pid_exists(proc.pid)


def _raw(ctl: ProxyControl, request: bytes) -> tuple[int, dict[str, object]]:
    """Send one raw request to the control API; the status and JSON body of its answer."""
    line, _, rest = request.partition(b"\r\n")  # with the control key, as the harness's calls carry it
    with socket.create_connection((ctl.host, ctl.port), timeout=5) as sock:
        sock.sendall(line + b"\r\nX-Manobench-Secret: " + (ctl.secret or "").encode() + b"\r\n" + rest)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.slow
def test_proxyd_control_api_answers_every_request_in_json(proxyd) -> None:  # type: ignore[no-untyped-def]
    """Routes it does not serve, methods a route does not take and requests that are not HTTP each get their
    status with a JSON body; the links are untouched and the API still answers afterwards."""
    _, ctl, _ = proxyd
    assert _raw(ctl, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert _raw(ctl, b"GET /links/nfvo-%3Evnfm.op/undo HTTP/1.1\r\n\r\n")[0] == 404
    assert _raw(ctl, b"DELETE /links/nfvo-%3Evnfm.op HTTP/1.1\r\n\r\n")[0] == 405
    assert _raw(ctl, b"POST /links HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")[0] == 405
    assert _raw(ctl, b"GET /links/nfvo-%3Evnfm.op/reset HTTP/1.1\r\n\r\n")[0] == 405
    status, body = _raw(ctl, b"nonsense\r\n\r\n")
    assert status == 400 and "error" in body
    status, body = _raw(ctl, b"GET /links/nfvo-%3Evnfm.op HTTP/1.1\r\n\r\n")
    assert status == 200 and body["delay_fwd"] == 0.01 and body["plane"] == "op"
    assert ctl.health()


def test_proxyd_rejects_a_bad_spec_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps([{"name": "x", "listen": "8.8.8.8:53", "target": "127.0.0.1:1"}]))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.links.proxyd", "--spec", str(tmp_path / "bad.json"),
         "--control", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=20, cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "loopback" in proc.stderr


def test_proxyd_reports_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.create_server((LO, 0)) as taken:
        port = taken.getsockname()[1]
        dump_specs([LinkSpec("l", (LO, port), (LO, 9))], tmp_path / "links.json")
        proc = subprocess.run(
            [sys.executable, "-m", "harness.links.proxyd", "--spec", str(tmp_path / "links.json"),
             "--control", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=20, cwd=REPO, env={**os.environ, "MANOBENCH_SECRET": "k"},
        )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot bind" in proc.stderr


@pytest.mark.slow
def test_proxyd_survives_the_exit_of_the_thread_that_launched_it(tmp_path: Path) -> None:
    """Linux's parent-death signal fires when the forking *thread* exits; that must not stop proxyd."""
    import threading

    dump_specs([LinkSpec("l", (LO, 0), (LO, 9))], tmp_path / "links.json")
    launched: list[tuple[subprocess.Popen[bytes], ProxyControl, dict[str, object]]] = []
    worker = threading.Thread(
        target=lambda: launched.append(launch_proxyd(tmp_path / "links.json", ready_file=tmp_path / "r.json")))
    worker.start()
    worker.join(15)
    proc, ctl, _ = launched[0]
    try:
        time.sleep(0.3)
        assert proc.poll() is None and ctl.health()
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


@pytest.mark.slow
def test_proxyd_exits_when_its_parent_dies(tmp_path: Path) -> None:
    dump_specs([LinkSpec("l", (LO, 0), (LO, 9))], tmp_path / "links.json")
    ready = tmp_path / "ready.json"
    # The parent is a shell that starts proxyd and then waits; killing the shell orphans proxyd.
    parent = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -m harness.links.proxyd --spec "{tmp_path}/links.json" '
                     f'--control 127.0.0.1:0 --ready-file "{ready}" & wait'],
        cwd=REPO, start_new_session=True, env={**os.environ, "MANOBENCH_SECRET": "k"},
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline, "proxyd never became ready"
            time.sleep(0.02)
        pid = json.loads(ready.read_text())["pid"]
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 3
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "proxyd outlived its parent"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            parent.kill()
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- netem probe -------------------------------------------------------------------------------------


def _probe_namespaces() -> set[str]:
    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split()[0] for line in out.splitlines() if line.startswith("mb-probe-")}


def test_netem_probe_is_quick_cached_and_leaves_no_namespace() -> None:
    before = _probe_namespaces()
    probe_netem.cache_clear()
    start = time.monotonic()
    probe = probe_netem()
    assert time.monotonic() - start < 5
    assert probe.reason
    assert probe_netem() is probe  # cached per process
    # Another test process may be probing right now; its namespace lives a fraction of a second, ours none.
    deadline = time.monotonic() + 3
    while not _probe_namespaces() <= before:
        assert time.monotonic() < deadline, f"probe namespace left behind: {_probe_namespaces() - before}"
        time.sleep(0.05)

    backend, why = choose_backend("auto")
    assert backend == ("netem" if probe.available else "proxy")
    assert why
    assert choose_backend("proxy")[0] == "proxy"
    if probe.available:
        assert choose_backend("netem")[0] == "netem"
    else:
        assert "netem" in why and probe.reason in why
        with pytest.raises(UserError, match="not available") as err:
            choose_backend("netem")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError):
        choose_backend("tc")
