"""Who may talk to a run's instruments: the per-run secret and the keys derived from it (docs/security.md).

The harness makes one random secret per run (`new_secret`) and never puts it on a command line (argv is
world-readable in /proc): helpers get it through their environment, services a key of their own inside their
spec. Every key is derived from the run's secret by name (`key`), so:

- a service holds only its own key (`key(secret, "slm-a")`): it can sign its own events and completion notices,
  and the harness can call its `/hb-now` with that key, but it cannot pass for another service, for the BSS or
  for the harness;
- the harness's control clients (proxyd's API, the Locust BSS's /go and /warmup, the swarm agent) use
  `key(secret, CONTROL)`, which no service is given;
- the BSS and the collector, which check every sender, hold the run's secret itself and derive the key of the
  name a sender claims.

Keys travel in the `HEADER` of an HTTP request, or in the first line of a collector connection (`hello`).
They are compared with `hmac.compare_digest`, so a wrong key takes the same time whatever its prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

HEADER = "X-Manobench-Secret"
SECRET_ENV = "MANOBENCH_SECRET"  # a harness helper's key (proxyd, the Locust BSS), in its environment only
CONTROL = "control"  # the name of the harness's own control key: given to no service
BSS = "bss"  # the BSS's own name in the history; only the BSS's key may send events as it
HARNESS = "harness"  # events of this name are emitted in the harness's process only, never received


def new_secret() -> str:
    """A fresh run secret: 128 random bits, hex."""
    return secrets.token_hex(16)


def key(secret: str, name: str) -> str:
    """The key of `name` (a service id, BSS, CONTROL) under the run's `secret`: HMAC-SHA256, 128 bits, hex."""
    return hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()[:32]


def matches(expected: str | None, given: object) -> bool:
    """Whether `given` is the `expected` key (constant time); an expected None means the check is off."""
    if expected is None:
        return True
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def hello(svc: str, secret_key: str) -> bytes:
    """A collector connection's first line: who sends the events that follow, with its key."""
    return b'{"hello":%s,"secret":%s}\n' % (_quote(svc), _quote(secret_key))


def _quote(text: str) -> bytes:
    return json.dumps(text).encode()
