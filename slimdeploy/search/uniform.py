"""Uniform search: one width multiplier for every group, bisected on measured latency."""
from __future__ import annotations

from ..progress import bar
from .base import SearchProblem, SearchResult, Searcher, require_reachable


class UniformSearch(Searcher):
    """Largest multiplier whose measured latency (and caps) meet the budget, by bisection."""

    name = "uniform"

    def __init__(self, steps: int = 7):
        self.steps = steps

    def search(self, problem: SearchProblem) -> SearchResult:
        history = []
        full = problem.space.full()
        if problem.meets(full):
            return SearchResult(full, problem.latency(full), problem.score(full), self.name,
                                notes=["the original already meets the budget"])
        require_reachable(problem)
        low, high = 0.0, 1.0  # low meets (the smallest widths), high does not
        best = problem.smallest()
        for step in range(self.steps):
            mid = (low + high) / 2
            widths = problem.snap(problem.space.uniform(max(mid, 1e-6), problem.align))
            ratio = problem.latency(widths)
            ok = ratio <= problem.target_ratio and problem.within_caps(widths)
            history.append({"multiplier": round(mid, 4), "latency_ratio": ratio, "meets": ok})
            problem.say(f"{bar(step + 1, self.steps)} uniform x{mid:.3f}: latency {ratio:.3f}x "
                        f"{'meets' if ok else 'over'} budget")
            if ok:
                low, best = mid, widths
            else:
                high = mid
        return SearchResult(best, problem.latency(best), problem.score(best), self.name, history)
