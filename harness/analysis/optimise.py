"""Eq 10 over a grid of configurations: the operator's question "which z is cheapest for my weights?"."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import pandas as pd

from harness import model
from harness.analysis.sweep_folder import Settings
from harness.analysis.tables import Row
from harness.errors import UserError
from harness.plan import config
from harness.plan.bounds import NUMBER


def parse_weights(text: str) -> tuple[float, float, float, float]:
    """`alpha,beta,gamma,delta` as four non-negative numbers."""
    parts = [part.strip() for part in text.split(",")]
    # ASCII decimal numbers only: float() reads '١' as 1 and 'inf', 'nan', '1_0' as numbers
    weights = tuple(float(p) for p in parts) if all(NUMBER.fullmatch(p) for p in parts) else ()
    if len(weights) != 4 or any(not math.isfinite(w) or w < 0 for w in weights):
        raise UserError(f"--weights expects four numbers >= 0 as alpha,beta,gamma,delta (got {text!r})")
    return weights  # type: ignore[return-value]


def parse_grid(items: Iterable[str]) -> dict[str, list[object]]:
    """`key=v1,v2,...` options into {key: [values]}; a key named twice is an error."""
    grid: dict[str, list[object]] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--grid expects key=v1,v2,... (got {item!r})")
        key, value = config.parse_assignment(item)
        if key in grid:
            raise UserError(f"--grid names {key!r} twice")
        grid[key] = value if isinstance(value, list) else [value]
    return grid


def candidates(designs: Iterable[str], mechanisms: Iterable[str]) -> list[tuple[str, str]]:
    """(design, mechanism) pairs that exist: only the centralised design has a restart variant."""
    pairs = [(d, m) for d in designs for m in mechanisms if m == "state-sharing" or d == "centralised"]
    if not pairs:
        raise UserError("no design takes the mechanism(s) given: restart applies to the centralised design only")
    return list(dict.fromkeys(pairs))


def evaluate_grid(
    base: Settings,
    pairs: Iterable[tuple[str, str]],
    grid: dict[str, list[object]],
    weights: tuple[float, float, float, float],
) -> list[Row]:
    """Every (design, mechanism) x grid point, modelled and costed, cheapest first (ties keep grid order)."""
    alpha, beta, gamma, delta = weights
    rows = []
    keys = list(grid)
    for design, mechanism in pairs:
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            assignments = [("design", design), ("mechanism", mechanism), *point.items(),
                           ("alpha", alpha), ("beta", beta), ("gamma", gamma), ("delta", delta)]
            z = config.build(config.apply_overrides(base, assignments))
            m = model.evaluate(z)
            # C first after the point: a terminal too narrow for every metric still shows the answer
            rows.append({"design": design, "mechanism": z.mechanism, **point, "C": m.C,
                         **{name: getattr(m, name) for name in model.METRICS}})
    # a NaN cost (no recovery) ranks last; ties keep grid order
    ranked = pd.DataFrame(rows).sort_values("C", na_position="last", kind="stable")
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked.to_dict("records")  # type: ignore[return-value]


def optimum_per_candidate(rows: list[Row]) -> dict[tuple[str, str], Row]:
    """The cheapest row of each (design, mechanism) (rows arrive sorted by cost)."""
    best = pd.DataFrame(rows).groupby(["design", "mechanism"], sort=False).head(1)
    return {(row["design"], row["mechanism"]): row for row in best.to_dict("records")}  # type: ignore[misc]
