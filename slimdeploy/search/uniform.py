"""Uniform search: one width multiplier for every group, bisected on latency."""
from __future__ import annotations

from ..progress import bar, progress
from .base import SearchProblem, SearchResult, Searcher, register_searcher


@register_searcher
class UniformSearch(Searcher):
    """The largest single multiplier whose latency (and every other cost) meets the budget.

    Args:
        steps: bisection steps on the multiplier (7 resolve it to within 1/128).
    """

    name = "uniform"

    def __init__(self, steps: int = 7):
        self.steps = steps

    def search(self, problem: SearchProblem) -> SearchResult:
        full = problem.full()
        if problem.meets(full):
            return self.result(problem, full, notes=["the original already meets the budget"])
        problem.require_reachable()
        history = []
        low, high = 0.0, 1.0  # low meets (the smallest widths), high does not
        best = problem.smallest()
        for step in range(self.steps):
            mid = (low + high) / 2
            widths = problem.uniform(mid)
            ok = problem.meets(widths)
            ratio = problem.latency(widths)
            history.append({"multiplier": round(mid, 4), "latency_ratio": ratio, "meets": ok})
            note = f"x{mid:.3f}: latency {ratio:.3f}x {'meets' if ok else 'over'} budget"
            progress(problem.say, "uniform bisection", step + 1, self.steps, f"{bar(step + 1, self.steps)} uniform {note}",
                     note)
            if ok:
                low, best = mid, widths
            else:
                high = mid
        return self.result(problem, best, history)
