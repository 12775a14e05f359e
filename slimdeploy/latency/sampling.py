"""Width configurations that cover every group's range (Latin-hypercube style), for fitting latency."""
from __future__ import annotations

import random

from ..space import MIN_WIDTH_FRACTION, WidthSpace, Widths


def covering_samples(space: WidthSpace, count: int, seed: int = 0, min_fraction: float = MIN_WIDTH_FRACTION,
                     align: int = 8) -> list[Widths]:
    """`count` widths; per group, its `choices` (the widths a search may give it) are cut into `count`
    equal strata and each configuration draws from a different stratum (in shuffled order),
    so every group's whole range is covered evenly however many groups there are."""
    rng = random.Random(seed)
    columns: dict[str, list[int]] = {}
    for g in space.groups:
        choices = g.choices(align, min_fraction)
        column = [choices[min(len(choices) - 1, int((i + rng.random()) * len(choices) / count))]
                  for i in range(count)]
        rng.shuffle(column)
        columns[g.name] = column
    return [Widths(space.fingerprint, {name: col[i] for name, col in columns.items()}) for i in range(count)]
