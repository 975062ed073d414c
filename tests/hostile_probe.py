"""A hostile neighbour on a run's network: tries every instrument of the run without its secret.

Standard library only, so the very same file runs as a local process (`python3 tests/hostile_probe.py`) and
inside a container of the manobench image (`python3 -c <this source>`). It reads what to try as JSON from
its first argument (addresses only: nothing in it is secret) and prints one JSON object: for each collector
attempt whether the collector dropped the connection, and for each HTTP attempt the status it got (0: no
answer). tests/test_hostile_neighbour.py holds the run's own results against it.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import uuid

FORGED_REQ = "00000000-0000-4000-8000-00000000beef"  # a `completed` for this must never reach the history


def forged_completed(svc: str = "bss") -> bytes:
    event = {"t": 1.0, "wall": 1.0, "svc": svc, "kind": "completed", "req": FORGED_REQ, "by": "slm-a", "n": 1}
    return (json.dumps(event) + "\n").encode()


COLLECTOR_ATTEMPTS = {
    "no_hello_forged_bss": forged_completed(),
    "wrong_key_as_bss": b'{"hello":"bss","secret":"' + b"0" * 32 + b'"}\n' + forged_completed(),
    "as_harness": b'{"hello":"harness","secret":""}\n' + forged_completed("harness"),
    "no_key_as_service": b'{"hello":"slm-a","secret":""}\n' + forged_completed("slm-a"),
    "list_line": b"[1]\n",
    "binary_junk": b"\x00\xff\xfe\x80junk\x01\x02\n",
}


def dropped(address: str, payload: bytes) -> bool:
    """Send `payload` and whether the collector then closes the connection (within 5 s)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.settimeout(5)
            return sock.recv(1) == b""
        except ConnectionError:
            return True
        except TimeoutError:
            return False


def status(address: str, method: str, path: str, body: object | None = None,
           headers: dict[str, str] | None = None) -> int:
    """The HTTP status of one request (0: no answer)."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def probe(targets: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {"collector": {}, "http": {}}
    collector = targets.get("collector")
    if isinstance(collector, str):
        out["collector"] = {name: dropped(collector, payload) for name, payload in COLLECTOR_ATTEMPTS.items()}
    http_: dict[str, int] = {}
    wrong = {"X-Manobench-Secret": "0" * 32}
    bss = targets.get("bss")
    if isinstance(bss, str):
        http_["bss_complete"] = status(bss, "POST", "/complete", {"req": FORGED_REQ, "by": "slm-a"})
        http_["bss_complete_wrong_key"] = status(bss, "POST", "/complete", {"req": FORGED_REQ, "by": "slm-a"}, wrong)
        http_["bss_complete_list"] = status(bss, "POST", "/complete", [1])
    for name in ("go", "warmup") if targets.get("locust") else ():
        http_[f"bss_{name}"] = status(str(bss), "POST", f"/{name}", {"n": 50, "users": 5, "timeout": 1})
    for svc, hb in dict(targets.get("hb") or {}).items():  # type: ignore[call-overload]
        http_[f"{svc}_hb_now"] = status(hb, "POST", "/hb-now", {"silence": True})
        http_[f"{svc}_release"] = status(hb, "POST", "/release", {}, wrong)
    proxyd, link = targets.get("proxyd"), str(targets.get("link", "x"))
    if isinstance(proxyd, str):
        http_["proxyd_links"] = status(proxyd, "GET", "/links")
        http_["proxyd_cut"] = status(proxyd, "POST", f"/links/{link}", {"cut": True})
        http_["proxyd_delay"] = status(proxyd, "POST", f"/links/{link}", {"delay_fwd": 5.0}, wrong)
        http_["proxyd_reset"] = status(proxyd, "POST", f"/links/{link}/reset", {})
        http_["proxyd_health"] = status(proxyd, "GET", "/health")  # open, and says nothing that matters
    agent = targets.get("agent")
    if isinstance(agent, str):
        for name, cid in (("agent_leave", "../../swarm/leave?force=true&x="), ("agent_kill", uuid.uuid4().hex * 2)):
            http_[name] = status(agent, "POST", f"/kill?container={cid}")
        http_["agent_pause"] = status(agent, "POST", f"/pause?container={targets.get('victim')}", None, wrong)
    spec = targets.get("spec")
    if isinstance(spec, str):
        http_["spec_server"] = status(spec, "GET", "/spec/slm-a")  # the spec carries slm-a's key
    out["http"] = http_
    return out


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.argv[1]))), flush=True)
