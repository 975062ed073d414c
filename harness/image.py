"""`manobench-target`, the one image every service container runs, built without needing a registry.

The base is, in this order: `--base` / $BASE_IMAGE if given (pulled if missing), else a slim Python image if
it is here or can be pulled, else a minimal Debian bookworm made here: `debootstrap --variant=minbase` with
python3 and python3-aiohttp from Debian's mirror, trimmed (no docs, man pages, locales, apt lists) and
`docker import`ed as `manobench-base:bookworm-<hash>` (about 130 MB, under a minute to make).

Both images are cached by content: the target is tagged `manobench-target:<hash>` where the hash covers
targets/*.py, docker/Dockerfile and the base asked for; the local base by its package list and mirror. A
build with nothing changed finds the tag and returns at once. `manobench-target:latest` always points at
the last build (the checked-in compose files use it).
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

ROOT = Path(__file__).resolve().parents[1]
REPO = "manobench-target"
BASE_REPO = "manobench-base"
DEFAULT_PULL_BASE = "python:3.11-slim"
SUITE = "bookworm"
PACKAGES = ("python3-minimal", "python3-aiohttp")
LABELS = {"manobench": "1"}
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


def docker(*args: str, check: bool = True, timeout: float | None = 600, input: bytes | None = None,
           capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; a failure becomes a one-line UserError quoting docker's complaint."""
    try:
        proc = subprocess.run(["docker", *args], capture_output=capture, text=True, timeout=timeout,
                              check=False, input=input)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise UserError("docker: the docker CLI is not installed (the docker runtime needs Docker)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"docker {' '.join(args[:2])}: no answer within {timeout:g} s") from None
    if check and proc.returncode != 0:
        why = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise UserError(f"docker {' '.join(args[:2])} failed: {why[-1] if why else f'exit {proc.returncode}'}")
    return proc


def available() -> tuple[bool, str]:
    """Whether a Docker daemon answers here, and why not."""
    if shutil.which("docker") is None:
        return False, "the docker CLI is not installed"
    try:
        proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False, "the Docker daemon does not answer"
    if proc.returncode != 0:
        return False, f"no Docker daemon: {(proc.stderr or '').strip()[:200]}"
    return True, f"Docker {proc.stdout.strip()}"


def exists(tag: str) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", tag, check=False, timeout=30).returncode == 0


def _files() -> list[Path]:
    return sorted([*(ROOT / "targets").rglob("*.py"), ROOT / "docker" / "Dockerfile"])


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
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        changes = ["--change", "LABEL manobench=1", "--change", "LABEL manobench.image=base",
                   "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "--change", 'CMD ["python3"]']
        imp = subprocess.run(["docker", "import", *changes, "-", tag], stdin=tar.stdout, capture_output=True,
                             text=True, check=False, timeout=600)
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise UserError(f"image: docker import failed: {imp.stderr.strip()[-300:]}")
    return tag, "debootstrap"


def resolve_base(base: str, say=print) -> tuple[str, str]:
    """(base image, how it was had) for a requested base."""
    if base == "debootstrap":
        return build_debootstrap_base(say)
    if base != "auto":
        if not exists(base):
            say(f"image: pulling {base}")
            docker("pull", "-q", base, timeout=600)
            return base, "given, pulled"
        return base, "given"
    if exists(DEFAULT_PULL_BASE):
        return DEFAULT_PULL_BASE, "present"
    if docker("pull", "-q", DEFAULT_PULL_BASE, check=False, timeout=120).returncode == 0:
        return DEFAULT_PULL_BASE, "pulled"
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
        docker("tag", tag, f"{REPO}:latest", timeout=60)
        return ImageInfo(tag, _label(tag, "manobench.base") or "?", "cached", True, time.monotonic() - t0)
    base_image, source = resolve_base(wanted, say)
    say(f"image: building {tag} on {base_image}")
    with tempfile.TemporaryDirectory(prefix="manobench-ctx-") as tmp:
        ctx = Path(tmp)
        shutil.copy(ROOT / "docker" / "Dockerfile", ctx / "Dockerfile")
        shutil.copytree(ROOT / "targets", ctx / "targets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        docker("build", "-q", "--build-arg", f"BASE_IMAGE={base_image}", "--label", f"manobench.content={tag}",
               "--label", f"manobench.base={base_image}", "-t", tag, "-t", f"{REPO}:latest", str(ctx), timeout=900)
    _drop_stale(tag)
    return ImageInfo(tag, base_image, source, False, time.monotonic() - t0)


def _drop_stale(keep: str) -> None:
    """Untag earlier target builds (an image still used by a container stays, docker refuses quietly)."""
    proc = docker("images", REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False, timeout=60)
    stale = [t for t in proc.stdout.split() if t not in (keep, f"{REPO}:latest") and not t.endswith(":<none>")]
    if stale:
        docker("rmi", *stale, check=False, timeout=120)


def _label(tag: str, key: str) -> str:
    proc = docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{key}"}}}}', tag, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def ensure(say=print) -> str:
    """The target image for the current sources, built if needed; returns its tag."""
    return build(say=say).tag
