"""Greedy search: from full width, repeatedly take the step that saves the most latency per accuracy lost.

Latency savings per channel are estimated once per group (that group alone at half width) and
refined with every step taken; a step is taken only when it lowers the latency. Accuracy lost
is the drop of the problem's score (with data: BatchNorm-recalibrated accuracy of the pruned
original; without: retained importance).
"""
from __future__ import annotations

from ..space import Widths
from .base import SearchProblem, SearchResult, Searcher, register_searcher
from .uniform import UniformSearch


@register_searcher
class GreedySearch(Searcher):
    """Greedy width reduction scored on the original model's weights.

    Args:
        step_fraction: how far one step narrows a group, as a share of its full width.
        tries_per_step: best-ranked steps tried (latency checked) before giving up on a round.
        max_steps: upper bound on the steps taken.
        keep_uniform_if_better: compare with the uniform answer and keep whichever scores higher.
    """

    name = "greedy"

    def __init__(self, step_fraction: float = 0.25, tries_per_step: int = 3, max_steps: int = 200,
                 keep_uniform_if_better: bool = True):
        self.step_fraction = step_fraction
        self.tries_per_step = tries_per_step
        self.max_steps = max_steps
        self.keep_uniform_if_better = keep_uniform_if_better

    def search(self, problem: SearchProblem) -> SearchResult:
        space = problem.space
        current = problem.full()
        if problem.meets(current):
            return self.result(problem, current, notes=["the original already meets the budget"])
        problem.require_reachable()
        ratio, score = problem.latency(current), problem.score_of(current)
        slope = self._slopes(problem, current, ratio)
        history, rejected = [], set()
        for _ in range(self.max_steps):
            if problem.meets(current):
                break
            ranked = []
            for g in space:
                steps = max(1, round(self.step_fraction * len(problem.choices(g.name))))
                new = problem.step_down(g.name, current[g.name], steps)
                if new == current[g.name] or (g.name, new) in rejected:
                    continue
                candidate = current.replace(**{g.name: new})
                lost = max(score - problem.score_of(candidate), 1e-6)
                saved = max(slope[g.name], 1e-9) * (current[g.name] - new)
                ranked.append((saved / lost, g.name, candidate))
            if not ranked:
                break
            ranked.sort(key=lambda item: item[0], reverse=True)
            for _, name, candidate in ranked[: self.tries_per_step]:
                new_ratio = problem.latency(candidate)
                slope[name] = max(ratio - new_ratio, 0.0) / (current[name] - candidate[name])
                if new_ratio < ratio:
                    current, ratio = candidate, new_ratio
                    score = problem.score_of(current)
                    history.append({"group": name, "width": candidate[name], "latency_ratio": ratio, "score": score})
                    problem.say(f"greedy {name} -> {candidate[name]}: latency {ratio:.3f}x, score {score:.4f}")
                    break
                rejected.add((name, candidate[name]))
        if not problem.meets(current):
            result = UniformSearch().search(problem)
            result.method, result.notes = self.name, ["greedy stalled above the budget; used the uniform solution"]
            return result
        result = self.result(problem, current, history)
        if self.keep_uniform_if_better:
            uniform = UniformSearch().search(problem)
            if uniform.score > result.score:
                return self.result(problem, uniform.widths, history + uniform.history,
                                   [f"the uniform solution scored higher ({uniform.score:.4f} > {result.score:.4f}) "
                                    f"and was kept"])
        return result

    def _slopes(self, problem: SearchProblem, current: Widths, ratio: float) -> dict[str, float]:
        """Latency ratio saved per channel removed, with each group alone at about half width."""
        slope = {}
        for g in problem.space:
            choices = problem.choices(g.name)
            half = min(choices, key=lambda c: abs(c - g.width // 2))
            if half >= g.width:
                slope[g.name] = 0.0
                continue
            r = problem.latency(current.replace(**{g.name: half}))
            slope[g.name] = max(ratio - r, 0.0) / (g.width - half)
        return slope
