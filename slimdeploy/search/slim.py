"""Greedy slimming on shared-weight scores (AutoSlim, ALGORITHMS.md §6.3), with latency as the cost.

From full width, every step tries narrowing each group by `step` choices, scores each trial on
the supernet, and keeps the one that loses the least accuracy per unit of latency saved, until
every cost is within its limit. Trials that save no latency are taken only when nothing else is
left. The path is checkpointed after each step; a resumed search continues on it, and searches
for several budgets on one problem share their scores.
"""
from __future__ import annotations

from ..errors import SlimdeployError
from ..space import Widths
from .base import SearchProblem, SearchResult, Searcher, register_searcher


@register_searcher
class SlimSearch(Searcher):
    """AutoSlim-style greedy slimming.

    Args:
        step: choices a group is narrowed by per trial (1 = the next narrower width).
        max_steps: upper bound on steps.
    """

    name = "slim"
    shared_weights = "supernet"

    def __init__(self, step: int = 1, max_steps: int = 1000):
        self.step, self.max_steps = step, max_steps

    def search(self, problem: SearchProblem) -> SearchResult:
        current = problem.full()
        if problem.meets(current):
            return self.result(problem, current, notes=["the original already meets the budget"])
        problem.require_reachable()
        saved = problem.resume()
        history = saved["history"] if saved else []
        if saved:
            current = Widths(current.structure, saved["widths"])
            problem.say(f"resuming slimming after {len(history)} steps")
        for _ in range(len(history), self.max_steps):
            if problem.meets(current):
                break
            score, latency = problem.score_of(current), problem.latency(current)
            trials = []
            for g in problem.space:
                narrower = problem.step_down(g.name, current[g.name], self.step)
                if narrower == current[g.name]:
                    continue
                trial = current.replace(**{g.name: narrower})
                saved_latency = latency - problem.latency(trial)
                lost = score - problem.score_of(trial)
                rank = (0, lost / saved_latency) if saved_latency > 1e-9 else (1, lost)
                trials.append((rank, g.name, trial))
            if not trials:
                break
            _, name, current = min(trials, key=lambda t: t[0])
            history.append({"group": name, "width": current[name], "latency_ratio": problem.latency(current),
                            "score": problem.score_of(current)})
            problem.say(f"slim {name} -> {current[name]}: latency {problem.latency(current):.3f}x, "
                        f"score {problem.score_of(current):.4f}")
            problem.checkpoint({"widths": dict(current.widths), "history": history})
        if not problem.meets(current):
            problem.require_reachable()  # raises when even the smallest widths miss
            raise SlimdeployError(f"slimming stopped after {len(history)} steps above the budget; raise "
                                  f"max_steps (--search-option max_steps=N) or step")
        return self.result(problem, current, history)
