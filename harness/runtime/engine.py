"""The Docker Engine, through the Docker SDK for Python (docker-py): one client per process, one-line errors.

Every image, network, container and clean-up call of the harness goes through `client()`; nothing runs the
`docker` CLI (a CLI round trip costs about 100 ms, an Engine API call over the socket 1-5 ms). The client is
`docker.from_env()`: DOCKER_HOST (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH) if set, else the docker
context (DOCKER_CONTEXT, then `currentContext` of ~/.docker/config.json), else the local socket; the API
version is negotiated with the Engine (20.10 here speaks 1.41).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager

from docker.client import DockerClient
from docker.errors import APIError, DockerException, NotFound

from harness.errors import UserError

__all__ = ["APIError", "DockerException", "NotFound", "available", "client", "engine_call", "reason"]


def reason(err: BaseException) -> str:
    """The one line worth showing of a docker-py error: the Engine's explanation, or the socket's errno text."""
    if isinstance(err, APIError) and err.explanation:
        text = str(err.explanation)
    else:
        text = str(err)
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)|Error\(-?\d+, '([^']+)'\)", text)
        if errno:
            text = errno.group(1) or errno.group(2)
    lines = text.strip().splitlines()
    return (lines[-1] if lines else type(err).__name__)[-300:]


@functools.cache
def _client() -> DockerClient:
    return DockerClient.from_env()  # a failure is not cached: the next call asks the Engine again


def client() -> DockerClient:
    """The process's client; no Engine answering is a one-line UserError."""
    try:
        return _client()
    except DockerException as err:
        raise UserError(f"docker: no Docker Engine answers: {reason(err)}") from None


def available() -> tuple[bool, str]:
    """Whether a Docker Engine answers here, and why not (the tests' skip reason, `harness image build`'s error)."""
    try:
        engine = _client()
        version = engine.version()
    except DockerException as err:
        return False, f"no Docker daemon: {reason(err)}"
    return True, f"Docker {version.get('Version', '?')} (API {engine.api.api_version}) at {engine.api.base_url}"


@contextmanager
def engine_call(what: str) -> Iterator[None]:
    """Turn a failed Engine call into `UserError("docker WHAT failed: <the Engine's explanation>")`."""
    try:
        yield
    except DockerException as err:
        raise UserError(f"docker {what} failed: {reason(err)}") from None
