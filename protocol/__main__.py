"""`python -m protocol` prints the contract's tables (routes, event kinds) as Markdown: docs/targets.md
carries them verbatim, and a test keeps the two the same."""

from __future__ import annotations

from protocol.events import KINDS
from protocol.messages import PLANES, ROUTES


def tables() -> str:
    lines = ["| plane (port) | route | required fields | served by | what |", "|---|---|---|---|---|"]
    for r in ROUTES:
        lines.append(f"| {r.plane} ({PLANES[r.plane]}) | `{r.method} {r.path}` | {', '.join(r.fields) or '-'} | "
                     f"{', '.join(r.served_by)} | {r.what} |")
    lines += ["", "| kind | recorded by | fields (`?` optional) | means |", "|---|---|---|---|"]
    for name, kind in KINDS.items():
        lines.append(f"| `{name}` | {kind.by} | {kind.fields or '-'} | {kind.means} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(tables(), end="")
