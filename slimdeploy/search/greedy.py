"""Greedy search: from full width, repeatedly take the step that saves the most latency per accuracy lost.

Latency savings per channel are measured once per group (that group alone at half width) and
refined with every measured step; each chosen step is then measured for real and taken only when
it lowers the measured latency. Accuracy lost is the drop of the problem's score (BatchNorm-
recalibrated accuracy on held-out batches, or the data-free retained importance).
"""
from __future__ import annotations

from ..space import Widths
from .base import SearchProblem, SearchResult, Searcher, require_reachable
from .uniform import UniformSearch


class GreedySearch(Searcher):
    name = "greedy"

    def __init__(self, step_fraction: float = 0.25, tries_per_step: int = 3, max_steps: int = 200,
                 keep_uniform_if_better: bool = True):
        self.step_fraction = step_fraction
        self.tries_per_step = tries_per_step
        self.max_steps = max_steps
        self.keep_uniform_if_better = keep_uniform_if_better

    def search(self, problem: SearchProblem) -> SearchResult:
        space, fp = problem.space, problem.space.fingerprint
        full = space.full()
        if problem.meets(full):
            return SearchResult(full, problem.latency(full), problem.score(full), self.name,
                                notes=["the original already meets the budget"])
        require_reachable(problem)
        current = dict(full.widths)
        ratio, score = problem.latency(full), problem.score(full)
        slope = self._slopes(problem, current, ratio)
        history, rejected = [], set()
        for _ in range(self.max_steps):
            if ratio <= problem.target_ratio and problem.within_caps(Widths(fp, current)):
                break
            ranked = []
            for g in space:
                unit = g.unit(problem.align)
                step = max(unit, round(g.width * self.step_fraction / unit) * unit)
                new = problem.step_down(g.name, current[g.name], step, unit)
                if new == current[g.name] or (g.name, new) in rejected:
                    continue
                candidate = {**current, g.name: new}
                lost = max(score - problem.score(Widths(fp, candidate)), 1e-6)
                saved = max(slope[g.name], 1e-9) * (current[g.name] - new)
                ranked.append((saved / lost, g.name, candidate))
            if not ranked:
                break
            ranked.sort(key=lambda item: item[0], reverse=True)
            for _, name, candidate in ranked[: self.tries_per_step]:
                new_ratio = problem.latency(Widths(fp, candidate))
                removed = current[name] - candidate[name]
                slope[name] = max(ratio - new_ratio, 0.0) / removed
                if new_ratio < ratio:
                    current, ratio = candidate, new_ratio
                    score = problem.score(Widths(fp, current))
                    history.append({"group": name, "width": candidate[name], "latency_ratio": ratio, "score": score})
                    problem.say(f"greedy {name} -> {candidate[name]}: latency {ratio:.3f}x, score {score:.4f}")
                    break
                rejected.add((name, candidate[name]))
        result = SearchResult(Widths(fp, current), ratio, score, self.name, history)
        if not (ratio <= problem.target_ratio and problem.within_caps(result.widths)):
            require_reachable(problem)  # raises with the lowest latency reached when nothing meets it
            result = UniformSearch().search(problem)
            result.method, result.notes = self.name, ["greedy stalled above the budget; used the uniform solution"]
        elif self.keep_uniform_if_better:
            uniform = UniformSearch().search(problem)
            if uniform.score > result.score:
                uniform.method = self.name
                uniform.notes = [f"the uniform solution scored higher ({uniform.score:.4f} > {result.score:.4f}) "
                                 f"and was kept"]
                uniform.history = history + uniform.history
                return uniform
        return result

    def _slopes(self, problem: SearchProblem, current: dict, ratio: float) -> dict[str, float]:
        """Latency ratio saved per channel removed, measured with each group alone at half width."""
        slope = {}
        for g in problem.space:
            half = max(g.unit(problem.align), g.width // 2 // g.unit(problem.align) * g.unit(problem.align))
            if half >= g.width:
                slope[g.name] = 0.0
                continue
            r = problem.latency(Widths(problem.space.fingerprint, {**current, g.name: half}))
            slope[g.name] = max(ratio - r, 0.0) / (g.width - half)
        return slope
