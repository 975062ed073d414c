"""docs/architecture.md is a map a newcomer follows (issue 21: "where does X live"): every file or folder it
names in backquotes exists, and every seam folder of the code is on it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PATH = re.compile(r"`((?:harness|faults|protocol|targets|examples|docs|tests|benchmarks)/[\w./-]*)`")


def test_every_path_the_map_names_exists():
    named = sorted(set(PATH.findall(DOC.read_text(encoding="utf-8"))))
    assert len(named) > 30, named
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_package_of_the_harness_is_on_the_map():
    text = DOC.read_text(encoding="utf-8")
    packages = sorted(p.parent.relative_to(ROOT).as_posix() + "/"
                      for p in (ROOT / "harness").glob("*/__init__.py"))
    unnamed = [p for p in packages if f"`{p}" not in text]
    assert not unnamed, f"harness packages missing from docs/architecture.md: {unnamed}"
