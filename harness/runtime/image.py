"""`manobench-target`, the one image every service container runs, built without needing a registry.

The base is, in this order: `--base` / $BASE_IMAGE if given (pulled if missing), else a slim Python image if
it is here or can be pulled, else a minimal Debian bookworm made here: `debootstrap --variant=minbase` with
python3 and python3-aiohttp from Debian's mirror, trimmed (no docs, man pages, locales, apt lists) and
imported as `manobench-base:bookworm-<hash>` (about 130 MB, under a minute to make). Every Engine call (inspect,
pull, import, build, tag, remove) goes through the Docker SDK (`harness.runtime.engine`), not the CLI.

Both images are cached by content: the target is tagged `manobench-target:<hash>` where the hash covers
protocol/ and targets/ (*.py), docker/Dockerfile and the base asked for; the local base by its package list
and mirror. A build with nothing changed finds the tag and returns at once. `manobench-target:latest` always
points at the last build (the checked-in compose files use it). Earlier target builds are untagged once they
are STALE_AFTER old: another harness on this Engine may have built one a moment ago and be about to use it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.runtime import engine

ROOT = Path(__file__).resolve().parents[2]
REPO = "manobench-target"
BASE_REPO = "manobench-base"
DEFAULT_PULL_BASE = "python:3.11-slim"
SUITE = "bookworm"
PACKAGES = ("python3-minimal", "python3-aiohttp")
LABELS = {"manobench": "1"}
STALE_AFTER = 3600.0  # seconds: an earlier target build is untagged by a new build only once this old
BASE_CHANGES = ["LABEL manobench=1", "LABEL manobench.image=base",  # Dockerfile lines applied by the import
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["python3"]']
_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt/archives",
         "var/lib/apt/lists", "var/cache/debconf/templates.dat-old", "var/log")


@dataclass
class ImageInfo:
    tag: str
    base: str
    base_source: str  # "given", "pulled", "present", "debootstrap", "debootstrap (cached)"
    cached: bool
    seconds: float

    def describe(self) -> str:
        how = "cached, nothing changed" if self.cached else f"built in {self.seconds:.1f} s"
        return f"{self.tag} ({how}; base {self.base}: {self.base_source})"


def available() -> tuple[bool, str]:
    """Whether a Docker Engine answers here, and why not."""
    return engine.available()


def exists(tag: str) -> bool:
    try:
        engine.client().images.get(tag)
    except engine.NotFound:
        return False
    return True


SOURCES = ("protocol", "targets")  # what a service container runs: the reference services and their protocol


def _files() -> list[Path]:
    return sorted([*(f for pkg in SOURCES for f in (ROOT / pkg).rglob("*.py")), ROOT / "docker" / "Dockerfile"])


def content_hash(base: str) -> str:
    """What the target image is made of: the service sources, the Dockerfile and the base asked for."""
    h = hashlib.sha256(f"base={base}\n".encode())
    for path in _files():
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def base_tag() -> str:
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)} {mirror} {' '.join(_TRIM)}".encode()).hexdigest()[:12]
    return f"{BASE_REPO}:{SUITE}-{key}"


def requested_base(base: str | None = None) -> str:
    """The base asked for: an image name, 'debootstrap', or 'auto' (the default)."""
    return base or os.environ.get("BASE_IMAGE") or "auto"


def target_tag(base: str | None = None) -> str:
    return f"{REPO}:{content_hash(requested_base(base))}"


def build_debootstrap_base(say=print) -> tuple[str, str]:
    """A minimal bookworm with python3 + aiohttp from Debian's packages, imported as an image (cached)."""
    tag = base_tag()
    if exists(tag):
        return tag, "debootstrap (cached)"
    if shutil.which("debootstrap") is None:
        raise UserError("image: no base image can be pulled and debootstrap is not installed "
                        "(apt-get install debootstrap, or set BASE_IMAGE to an image that is here)")
    if os.geteuid() != 0:
        raise UserError("image: making the base with debootstrap needs root (or set BASE_IMAGE)")
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    say(f"image: no base image can be pulled: making {tag} with debootstrap ({SUITE}, {', '.join(PACKAGES)})")
    with tempfile.TemporaryDirectory(prefix="manobench-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                               str(rootfs), mirror], capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise UserError(f"image: debootstrap failed: {' | '.join(tail)}")
        for rel in _TRIM:
            target = rootfs / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir(parents=True)
            elif target.exists():
                target.unlink()
        import_rootfs(rootfs, tag, BASE_CHANGES)
    return tag, "debootstrap"


def import_rootfs(rootfs: Path, tag: str, changes: list[str]) -> None:
    """`docker import` of a directory through the Engine API: tarred (numeric owners, as debootstrap made them)
    into a file beside it, which the SDK uploads without a read time-out (an import takes a while to answer)."""
    tarball = rootfs.with_name(rootfs.name + ".tar")
    proc = subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], capture_output=True,
                          text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise UserError(f"image: tar of {rootfs} failed: {proc.stderr.strip()[-300:]}")
    repo, _, version = tag.rpartition(":")
    try:
        with engine.engine_call(f"import {tag}"):
            engine.client().api.import_image(src=str(tarball), repository=repo, tag=version, changes=changes)
    finally:
        tarball.unlink(missing_ok=True)


def _pull(image: str) -> None:
    with engine.engine_call(f"pull {image}"):
        engine.client().images.pull(image)


def resolve_base(base: str, say=print) -> tuple[str, str]:
    """(base image, how it was had) for a requested base."""
    if base == "debootstrap":
        return build_debootstrap_base(say)
    if base != "auto":
        if not exists(base):
            say(f"image: pulling {base}")
            _pull(base)
            return base, "given, pulled"
        return base, "given"
    if exists(DEFAULT_PULL_BASE):
        return DEFAULT_PULL_BASE, "present"
    try:
        _pull(DEFAULT_PULL_BASE)
        return DEFAULT_PULL_BASE, "pulled"
    except UserError:  # no registry here: make the base
        pass
    return build_debootstrap_base(say)


def build(base: str | None = None, *, force: bool = False, say=print) -> ImageInfo:
    """Make sure `manobench-target:<content hash>` exists (building it if not) and tag it latest."""
    ok, why = available()
    if not ok:
        raise UserError(f"image: {why}")
    t0 = time.monotonic()
    wanted = requested_base(base)
    tag = target_tag(wanted)
    if not force and exists(tag):
        _tag_latest(tag)
        return ImageInfo(tag, _label(tag, "manobench.base") or "?", "cached", True, time.monotonic() - t0)
    base_image, source = resolve_base(wanted, say)
    say(f"image: building {tag} on {base_image}")
    with tempfile.TemporaryDirectory(prefix="manobench-ctx-") as tmp:
        ctx = Path(tmp)
        shutil.copy(ROOT / "docker" / "Dockerfile", ctx / "Dockerfile")
        for pkg in SOURCES:
            shutil.copytree(ROOT / pkg, ctx / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with engine.engine_call(f"build {tag}"):
            engine.client().images.build(path=str(ctx), tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True,
                                         labels={"manobench.content": tag, "manobench.base": base_image})
        _tag_latest(tag)
    _drop_stale(tag)
    return ImageInfo(tag, base_image, source, False, time.monotonic() - t0)


def _tag_latest(tag: str) -> None:
    with engine.engine_call(f"tag {tag}"):
        engine.client().images.get(tag).tag(REPO, "latest")


def _drop_stale(keep: str) -> None:
    """Untag earlier target builds older than STALE_AFTER (one still used by a container stays: the Engine
    refuses, quietly here); a younger one may be another run's, built from other sources, between its build
    and its containers' creation."""
    for img in engine.client().api.images(name=REPO):  # the listing's Created is a Unix time
        if time.time() - float(img.get("Created") or 0) < STALE_AFTER:
            continue
        for stale in (t for t in img.get("RepoTags") or [] if t not in (keep, f"{REPO}:latest")):
            try:
                engine.client().images.remove(stale)
            except engine.APIError:
                pass


def _label(tag: str, key: str) -> str:
    try:
        return str(engine.client().images.get(tag).labels.get(key, ""))
    except engine.NotFound:
        return ""



def build_declared(builds: dict[str, tuple[Path, str]], needed: list[str], say=print) -> None:
    """A target file's images (harness.plan.target): each one it says how to build is built from its folder on
    the base `manobench-target` was built on (build argument BASE_IMAGE: a Debian bookworm with Python, never
    pulled), the Engine's layer cache making a rebuild of an unchanged folder take about a second; every other
    image an instance names must be here already, since no registry can be reached."""
    base = _label(f"{REPO}:latest", "manobench.base") or build(say=say).base
    for tag, (context, dockerfile) in builds.items():
        if not (context / dockerfile).is_file():
            raise UserError(f"image {tag}: no {dockerfile} in {context}")
        say(f"image: building {tag} from {context}")
        with engine.engine_call(f"build {tag}"):
            engine.client().images.build(path=str(context), dockerfile=dockerfile, tag=tag, rm=True,
                                         buildargs={"BASE_IMAGE": base}, labels=dict(LABELS))
    for tag in needed:
        if tag not in builds and not exists(tag):
            raise UserError(f"image {tag} is not on this Engine and none can be pulled: build it, or say how "
                            "under the target file's images:")
