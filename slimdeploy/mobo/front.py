"""Successive Pareto fronts of (cost, loss) points, and PareCO's Pareto-aware weights of target bins.

Bin weights [Ours where ALGORITHMS.md §5 leaves it open]: the front is sorted by cost; the
segment between consecutive front points (c_i, l_i) and (c_{i+1}, l_{i+1}) contributes the
rectangle (c_{i+1} − c_i)·(l_i − l_{i+1}), shared among the target bins it spans in proportion
to their overlap with [c_i, c_{i+1}]. Bins where the front drops steeply or has gaps get more
samples. A share `floor` of the weight is spread uniformly, so no bin is never drawn (bins
outside the front's cost range would otherwise get none).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..search.pareto import non_dominated


def successive_fronts(points: Sequence[tuple[float, float]], until_cost: float = 0.9) -> list[int]:
    """Indices of (cost, loss) points on the first, second, ... Pareto fronts.

    Fronts are peeled off until the points taken reach a cost of `until_cost` (PareCO's
    post-training selection), or every point is taken. Each front is in increasing cost.
    """
    left = list(range(len(points)))
    taken: list[int] = []
    while left:
        front = [left[i] for i in non_dominated([points[j] for j in left])]
        taken += front
        left = [i for i in left if i not in set(front)]
        if max(points[i][0] for i in taken) >= until_cost:
            break
    return taken


def bin_edges(lower: float, upper: float = 1.0, bins: int = 50) -> np.ndarray:
    """`bins` + 1 equally spaced target costs from `lower` to `upper`."""
    if not lower < upper:
        raise ValueError(f"target bins need lower < upper, got {lower} and {upper}")
    return np.linspace(lower, upper, bins + 1)


def bin_weights(points: Sequence[tuple[float, float]], edges: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Probability of each bin [edges[j], edges[j+1]] from the Pareto front of (cost, loss) points.

    Example (front (0.2, 1.0), (0.5, 0.4), (1.0, 0.3); 4 bins over [0.2, 1]):
        >>> bin_weights([(0.2, 1.0), (0.5, 0.4), (1.0, 0.3)], np.linspace(0.2, 1.0, 5))
        array([0.52173913, 0.30434783, 0.08695652, 0.08695652])
    """
    edges = np.asarray(edges, float)
    n = len(edges) - 1
    uniform = np.full(n, 1.0 / n)
    front = [points[i] for i in non_dominated(points)]
    area = np.zeros(n)
    for (c0, l0), (c1, l1) in zip(front, front[1:]):
        overlap = np.clip(np.minimum(edges[1:], c1) - np.maximum(edges[:-1], c0), 0.0, None)
        area += overlap * (l0 - l1)
    if area.sum() <= 0:
        return uniform
    return (1.0 - floor) * area / area.sum() + floor * uniform
