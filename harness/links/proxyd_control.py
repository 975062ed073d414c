"""The control client of proxyd (the process of every link's latency proxy) and its launcher, for harness code
that is not asyncio.

urllib only, and with proxies switched off: an ``http_proxy`` variable in the user's environment must never
route our loopback control calls through some other host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from harness.errors import ManobenchError
from protocol import auth

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class ProxyControlError(ManobenchError):
    """proxyd answered with an error (``status`` 400/404/...) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"proxyd: {message}" if status == 0 else f"proxyd {status}: {message}")
        self.status = status


class ProxyControl:
    """Talks to one proxyd. Every call is a short blocking HTTP request on loopback."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, secret: str | None = None) -> None:
        """`secret`: the control key proxyd was started with (sent with every call: docs/security.md)."""
        self.secret = secret
        self.host = host
        self.port = port
        self.timeout = timeout
        self.base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _call(self, method: str, path: str, body: dict[str, object] | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.secret:
            req.add_header(auth.HEADER, self.secret)
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace").strip() or exc.reason
            raise ProxyControlError(exc.code, str(message)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProxyControlError(0, f"cannot reach {self.base}: {reason}") from None

    def health(self) -> bool:
        try:
            answer = self._call("GET", "/health")
        except ProxyControlError:
            return False
        return isinstance(answer, dict) and answer.get("ok") is True

    def refused(self) -> int:
        """Control requests proxyd refused for want of the key (from /health, which asks for none)."""
        answer = self._call("GET", "/health")
        return int(answer.get("refused", 0)) if isinstance(answer, dict) else 0

    def wait_healthy(self, timeout: float = 10.0, *, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Poll /health; with ``proc``, give up at once if that process has already exited."""
        deadline = time.monotonic() + timeout
        while True:
            if self.health():
                return
            if proc is not None and proc.poll() is not None:
                raise ProxyControlError(0, f"proxyd exited with code {proc.returncode} before it was healthy")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"proxyd at {self.base} not healthy after {timeout:g}s")
            time.sleep(0.02)

    def links(self) -> dict[str, dict[str, object]]:
        return self._call("GET", "/links")  # type: ignore[return-value]

    def link(self, name: str) -> dict[str, object]:
        return self._call("GET", f"/links/{_quote(name)}")  # type: ignore[return-value]

    def set(
        self,
        name: str,
        *,
        delay_fwd: float | None = None,
        delay_rev: float | None = None,
        jitter: float | None = None,
        cut: bool | None = None,
    ) -> dict[str, object]:
        """Change any of the link's settings at once; returns the link's new state."""
        given = {"delay_fwd": delay_fwd, "delay_rev": delay_rev, "jitter": jitter, "cut": cut}
        body: dict[str, object] = {k: v for k, v in given.items() if v is not None}
        return self._call("POST", f"/links/{_quote(name)}", body)  # type: ignore[return-value]

    def cut(self, name: str) -> dict[str, object]:
        return self.set(name, cut=True)

    def heal(self, name: str) -> dict[str, object]:
        return self.set(name, cut=False)

    def reset(self, name: str) -> int:
        """Abort the link's open connections (RST both ends); returns how many there were."""
        answer = self._call("POST", f"/links/{_quote(name)}/reset", {})
        return int(answer["reset"])  # type: ignore[index]


def launch_proxyd(
    spec_file: str | Path,
    control: str = "127.0.0.1:0",
    *,
    ready_file: str | Path,
    log_file: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 10.0,
    python: str = sys.executable,
    secret: str | None = None,
) -> tuple[subprocess.Popen[bytes], ProxyControl, dict[str, object]]:
    """Start proxyd, wait until it is up, and return (process, control client, ready info).

    The ready file carries the real ports, so ``control`` and listen ports may be 0 and parallel runs never
    race for a port. proxyd's stdout and stderr go to ``log_file`` (default: the ready file's name plus
    ``.log``), a file rather than a pipe nobody drains. On failure the process is killed and the error quotes
    the log. ``secret``: the control key (default: a fresh one), handed over in proxyd's environment.
    """
    secret = secret or auth.new_secret()
    ready = Path(ready_file)
    ready.unlink(missing_ok=True)
    log = Path(log_file) if log_file is not None else ready.with_name(ready.name + ".log")
    argv = [python, "-m", "harness.links.proxyd", "--spec", str(spec_file), "--control", control,
            "--ready-file", str(ready), "--parent", str(os.getpid())]
    # Whatever the caller's cwd and env, the child must import this very harness package.
    child_env = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, child_env.get("PYTHONPATH", "")) if p)
    child_env[auth.SECRET_ENV] = secret
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=child_env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            why = log.read_text(errors="replace").strip() or f"no ready file after {timeout:g}s"
            raise ProxyControlError(0, f"proxyd failed to start: {why}")
        time.sleep(0.01)
    info = json.loads(ready.read_text())
    host, _, port = str(info["control"]).rpartition(":")
    ctl = ProxyControl(host.strip("[]"), int(port), secret=secret)
    ctl.wait_healthy(timeout=max(0.5, deadline - time.monotonic()), proc=proc)
    return proc, ctl, info
