"""The house rules of issue 21 that no linter checks, kept by the suite: no import cycle among the first-party
modules (import-linter's contracts cover some floors; this covers them all), no module over 600 lines, and
`Any` in harness/ at most half of the 202 lines it had when the issue was filed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "faults", "protocol", "targets")
MAX_LINES = 600
MAX_ANY_LINES = 101


def cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root in imports:
        if root in index:
            continue
        work = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(imports.get(nxt, ())))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_first_party_modules():
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert len(imports) > 100, len(imports)
    assert cycles(imports) == [], "import cycles among first-party modules"


def test_no_module_over_600_lines():
    files = [p for pkg in (*PACKAGES, "examples", "benchmarks", "tests") for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 100
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text(encoding="utf-8").splitlines()))
            > MAX_LINES}
    assert not long, long


def test_any_in_the_harness_stays_at_most_half_of_what_it_was():
    any_type = re.compile(r"\bAny\b")
    lines = [line for p in (ROOT / "harness").rglob("*.py") for line in p.read_text(encoding="utf-8").splitlines()
             if any_type.search(line)]
    assert len(lines) <= MAX_ANY_LINES, f"{len(lines)} lines of harness/ name Any (at most {MAX_ANY_LINES})"
