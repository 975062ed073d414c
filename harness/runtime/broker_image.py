"""`manobench-bus`, the image of a run on the bus with the docker runtime, built here without a registry.

The services' image (`manobench-target`, harness.runtime.image: a debootstrapped Debian base where nothing
can be pulled) plus Debian's `rabbitmq-server` from the Debian mirror, for the run's broker container, and
the AMQP client the services speak on the bus (aio-pika, aiormq, pamqp: pure Python, copied from the
harness's own environment, so containers run exactly the versions the local runtime runs; Debian bookworm's
are two major versions older). One image for both roles keeps one build and one cache entry: a service
container runs `python3 -m targets`, the broker container Debian's server script (`docker/broker.Dockerfile`).

Cached by content like the target: `manobench-bus:<hash of the target tag, the Dockerfile, the broker's
config and the client packages' names and versions>`; nothing changed, the tag is found and returned at
once. The Debian packages come over the network at the first build (about 40 MB: Erlang), through the
Engine's build, the one step that needs the mirror.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from importlib.metadata import distribution
from pathlib import Path

from harness.runtime import engine
from harness.runtime import image as images
from harness.runtime.broker_node import CONFIG

REPO = "manobench-bus"
DOCKERFILE = images.ROOT / "docker" / "broker.Dockerfile"
CLIENT = ("aio_pika", "aiormq", "pamqp")  # import names; each is its own distribution (with '-' for '_')


def _client_dirs() -> list[Path]:
    """The client packages' directories in the harness's environment, each with its .dist-info (aiormq reads
    its own version from its metadata at import)."""
    found = []
    for name in CLIENT:
        dist = distribution(name.replace("_", "-"))
        info = next(f.parts[0] for f in dist.files or [] if f.parts[0].endswith(".dist-info"))
        found += [Path(str(dist.locate_file(name))), Path(str(dist.locate_file(info)))]
    return found


def content_hash(target: str) -> str:
    h = hashlib.sha256(f"target={target}\n".encode())
    h.update(DOCKERFILE.read_bytes() + CONFIG.encode() + b"dist-info\n")
    for name in CLIENT:
        h.update(f"{name}={distribution(name.replace('_', '-')).version}\n".encode())
    return h.hexdigest()[:16]


def build(say=print) -> images.ImageInfo:
    """Make sure `manobench-bus:<content hash>` exists on top of the current target image."""
    t0 = time.monotonic()
    target = images.build(say=say)
    tag = f"{REPO}:{content_hash(target.tag)}"
    if images.exists(tag):
        _tag_latest(tag)
        return images.ImageInfo(tag, target.tag, "cached", True, time.monotonic() - t0)
    say(f"image: building {tag} on {target.tag} (rabbitmq-server from Debian's mirror)")
    with tempfile.TemporaryDirectory(prefix="manobench-bus-ctx-") as tmp:
        ctx = Path(tmp)
        shutil.copy(DOCKERFILE, ctx / "Dockerfile")
        (ctx / "rabbitmq.conf").write_text(CONFIG, encoding="utf-8")
        for src in _client_dirs():
            shutil.copytree(src, ctx / "site" / src.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with engine.engine_call(f"build {tag}"):
            engine.client().images.build(path=str(ctx), tag=tag, buildargs={"TARGET_IMAGE": target.tag}, rm=True,
                                         labels={"manobench.content": tag, "manobench.base": target.tag})
    _tag_latest(tag)
    return images.ImageInfo(tag, target.tag, "built", False, time.monotonic() - t0)


def _tag_latest(tag: str) -> None:
    """`manobench-bus:latest`, what the standalone bus compose files run, follows the last build."""
    with engine.engine_call(f"tag {tag}"):
        engine.client().images.get(tag).tag(REPO, "latest")


if __name__ == "__main__":  # for the standalone compose files: `python -m harness.runtime.broker_image`
    print(build().describe())
