#!/usr/bin/env python3
"""A toy orchestrator with an API of its own, for manobench's python-client example (docs/targets.md): not the
documented http client's `POST /request` + `POST /complete`, but what real orchestrators offer:

- `POST /workflows {"name": ...}` -> 202 `{"id": ...}`: a workflow is accepted and runs in the background;
- `GET /workflows/{id}` -> `{"state": "PROCESSING" | "COMPLETED"}`; 404 for one it does not know;
- `GET /health` -> 200.

A workflow is `--steps` steps of `--step` seconds each. It knows nothing of manobench: it reads its address
and port from MANOBENCH_SPEC only because that is where a harness puts them (any orchestrator reads its
listen address from somewhere). State is in memory: a crash loses every workflow in flight, which the
client sees as `indeterminate` (never as done). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORKFLOWS: dict[str, str] = {}
LOCK = threading.Lock()


def run(wid: str, steps: int, step: float) -> None:
    for _ in range(steps):
        time.sleep(step)
    with LOCK:
        WORKFLOWS[wid] = "COMPLETED"


def handler(steps: int, step: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()  # headers and body leave in two writes: without NODELAY, Nagle holds the body ~40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                return self.reply(200, {"ok": True})
            wid = self.path.removeprefix("/workflows/")
            with LOCK:
                state = WORKFLOWS.get(wid)
            self.reply(200, {"state": state}) if state else self.reply(404, {"error": "unknown workflow"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self.reply(400, {"error": "not JSON"})
            if self.path != "/workflows":
                return self.reply(404, {"error": "no such route"})
            wid = uuid.uuid4().hex
            with LOCK:
                WORKFLOWS[wid] = "PROCESSING"
            threading.Thread(target=run, args=(wid, steps, step), daemon=True).start()
            self.reply(202, {"id": wid})

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--step", type=float, default=0.1)
    args = parser.parse_args()
    spec = json.loads(os.environ.get("MANOBENCH_SPEC") or '{"bind": "127.0.0.1", "ports": {"api": 8080}}')
    server = ThreadingHTTPServer((spec["bind"], spec["ports"]["api"]), handler(args.steps, args.step))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
