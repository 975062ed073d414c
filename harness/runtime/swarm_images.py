"""The services' image on every node of a swarm, without a public registry: `docker save` here, `docker load`
on each node's Engine, through the SDK.

Why not a registry run for the run (Debian's `docker-registry`): a swarm node pulls from a registry only over
TLS or from one its daemon is configured to trust (`insecure-registries` in each node's daemon.json, then a
daemon restart): a change on every node that the harness cannot make. The usual way round it, a registry
published on the routing mesh and pulled as `localhost:5000/...`, needs IPVS in the nodes' kernels, which
this project's kernel lacks (measured: no /proc/net/ip_vs, and a service's virtual IP does not answer).
save/load needs nothing but each node's Engine API (`ssh://node`, `tcp://node:2376` with TLS, or a unix
socket), which the harness already speaks, and the content-hashed tag (`manobench-target:<hash>`) makes it
idempotent: a node that has the tag is skipped. It costs one transfer of the image (120 MB) per node and
change of `targets/` or `protocol/`. `harness swarm check` then confirms the image on every node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from docker.client import DockerClient
from docker.errors import DockerException, ImageNotFound

from harness.errors import UserError
from harness.runtime import engine


@dataclass(frozen=True)
class Copied:
    engine: str
    skipped: bool
    seconds: float


def distribute(tag: str, engines: list[str]) -> list[Copied]:
    """Make sure each Engine (a base URL) has `tag`, copying it from the harness's Engine where it is missing."""
    source = engine.client()
    try:
        source.images.get(tag)
    except ImageNotFound:
        raise UserError(f"swarm images: {tag} is not on this Engine: `harness image build` first") from None
    done = []
    for url in engines:
        t0 = time.monotonic()
        try:
            target = DockerClient(base_url=url)
            try:
                target.images.get(tag)
                done.append(Copied(url, True, time.monotonic() - t0))
                continue
            except ImageNotFound:
                pass
            target.images.load(source.api.get_image(tag))  # streamed: the tarball is never held whole
            target.images.get(tag)
        except DockerException as err:
            raise UserError(f"swarm images: {url}: {engine.reason(err)}") from None
        done.append(Copied(url, False, time.monotonic() - t0))
    return done
