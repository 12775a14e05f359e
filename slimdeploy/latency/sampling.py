"""Width configurations to measure for fitting latency: covering every group's range (Latin-hypercube
style), and next where the fitted model is least certain."""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import numpy as np

from ..space import MIN_WIDTH_FRACTION, WidthSpace, Widths
from .predictor import Sample, fit


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


def most_uncertain(train: Sequence[Sample], candidates: Sequence[Widths], structure: str,
                   full_widths: Mapping[str, int], count: int, seed: int = 0, fits: int = 5,
                   macs: Mapping[str, list] | None = None) -> list[Widths]:
    """The `count` candidates the fitted model is least sure of: the largest relative spread of their
    predictions across `fits` models, each fitted on a bootstrap resample of `train`."""
    rng = np.random.default_rng(seed)
    predictions = []
    for _ in range(fits):
        drawn = [train[i] for i in rng.integers(0, len(train), len(train))]
        model = fit(drawn, structure, full_widths, macs=macs)
        predictions.append([model.predict(c.widths) for c in candidates])
    p = np.asarray(predictions)
    spread = p.std(axis=0) / np.maximum(p.mean(axis=0), 1e-12)
    return [candidates[i] for i in np.argsort(-spread, kind="stable")[:count]]
