"""Pareto utilities for (cost, accuracy) points: non-dominated filtering and the area under the front."""
from __future__ import annotations

from typing import Protocol, Sequence, TypeVar


class _Scored(Protocol):
    costs: dict[str, float]
    score: float


T = TypeVar("T", bound=_Scored)


def non_dominated(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, error) no other point beats on both (lower is better on both).

    A point is dominated when another is no worse on both and better on one; of exact duplicates
    the first is kept. Returned in order of increasing cost.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    kept, best_error = [], float("inf")
    for i in order:
        if points[i][1] < best_error:
            kept.append(i)
            best_error = points[i][1]
    return kept


def pareto_front(candidates: Sequence[T], cost: str) -> list[T]:
    """Candidates not beaten on both `cost` (lower is better) and score (higher is better)."""
    points = [(c.costs[cost], -c.score) for c in candidates]
    return [candidates[i] for i in non_dominated(points)]


def front_area(points: Sequence[tuple[float, float]], low: float, high: float) -> float:
    """Area under the best-accuracy step curve over cost in [low, high], divided by (high - low).

    `points` are (cost, accuracy). At each cost the curve is the best accuracy of any point at
    or below that cost (0 where there is none): the mean accuracy a user gets over that range
    of budgets. Used to compare whole accuracy–latency fronts.
    """
    if high <= low:
        raise ValueError("front_area needs low < high")
    front = [points[i] for i in non_dominated([(c, -a) for c, a in points])]
    area = 0.0
    for k, (cost, accuracy) in enumerate(front):
        start = max(cost, low)
        end = min(front[k + 1][0] if k + 1 < len(front) else high, high)
        if end > start:
            area += accuracy * (end - start)
    return area / (high - low)
