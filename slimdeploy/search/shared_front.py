"""Searchers that pick widths from a front trained with the weights: PareCO, Slim, TwoStage (arXiv 2007.11752).

Their shared weights (`slimdeploy.supernet.pareco_provider`) come with the history of the width
vectors visited during training (TwoStage: during its search after training). Per budget the
searcher scores, on the shared weights after BatchNorm recalibration, the history's successive
Pareto fronts of (cost, loss) until they reach `until_cost` (PareCO's post-training selection),
plus `refine` width vectors proposed for this budget's target (MOBO-RS at that target; Slim:
the widest uniform multipliers meeting it), and delivers the best-scoring one that meets every
limit. Scores are checkpointed to the search log, and shared across budgets.
"""
from __future__ import annotations

from ..errors import SlimdeployError
from ..space import Widths
from .base import SearchProblem, SearchResult, Searcher, register_searcher
from .uniform import UniformSearch


class FrontSearch(Searcher):
    """Best front point under the budget, from shared weights trained with a width history.

    Args:
        visits: width vectors visited over training (PareCO sets τ from it) or the TwoStage search.
        num_sampled: width vectors sampled per round (trained together for τ steps).
        prior_points: uniform warm-up visits before the Gaussian processes are used.
        beta: UCB exploration weight (bound = mean − √β·σ).
        baseline: reference point of the augmented Tchebyshev scalarization (standardized units).
        rho: augmentation weight of the scalarization.
        bins: target-cost bins over [lowest cost, 1].
        pareto_aware: weight target bins by the front's area (PareCO) rather than uniformly (Joslim).
        raw_samples: candidates the acquisition is maximized over.
        search_steps: binary-search steps on the preference to hit a target cost.
        tolerance: a proposal within this of its target cost is accepted.
        refine: extra width vectors proposed for each budget's target (0: the front only).
        until_cost: successive fronts are taken until they reach this cost.
        seed: the proposals' random generator.

    Example:
        >>> compress(model, "out", latency="0.3x,0.5x,0.7x", method="pareco", data="fashion-mnist",
        ...          search_options={"visits": 40})
    """

    def __init__(self, visits: int = 60, num_sampled: int = 2, prior_points: int = 20, beta: float = 0.1,
                 baseline: float = -3.0, rho: float = 1e-6, bins: int = 50, pareto_aware: bool = True,
                 raw_samples: int = 1000, search_steps: int = 10, tolerance: float = 0.02, refine: int = 6,
                 until_cost: float = 0.9, seed: int = 0):
        self.visits, self.num_sampled, self.prior_points = visits, num_sampled, prior_points
        self.beta, self.baseline, self.rho, self.bins, self.pareto_aware = beta, baseline, rho, bins, pareto_aware
        self.raw_samples, self.search_steps, self.tolerance = raw_samples, search_steps, tolerance
        self.refine, self.until_cost, self.seed = refine, until_cost, seed
        if visits < 2 or num_sampled < 1 or prior_points < 2 or refine < 0 or raw_samples < 1 or bins < 1:
            raise SlimdeployError(f"search method {self.name!r} needs visits >= 2, num_sampled >= 1, prior_points "
                                  f">= 2, refine >= 0, raw_samples >= 1 and bins >= 1")

    def search(self, problem: SearchProblem) -> SearchResult:
        full = problem.full()
        if problem.meets(full):
            return self.result(problem, full, notes=["the original already meets the budget"])
        problem.require_reachable()
        shared = problem.shared
        if shared is None or not hasattr(shared, "candidates"):
            raise SlimdeployError(f"search method {self.name!r} needs the shared weights it trains "
                                  f"({self.shared_weights}); run it through compress or search")
        done = (problem.resume() or {}).get("scored", 0)
        structure = problem.space.fingerprint
        front = shared.candidates(self.until_cost)
        target = problem.target_ratio * (1 - self.tolerance / 2)
        refined = shared.propose(target, self.refine, lambda w: problem.latency(Widths(structure, w)),
                                 self.seed) if self.refine and target < 1 else []
        candidates = list(dict.fromkeys(problem.space.validate(Widths(structure, w)) for w in front + refined))
        for i, widths in enumerate(candidates):
            if problem.meets(widths):
                problem.score_of(widths)
            if (i + 1) % 10 == 0 or i + 1 == len(candidates):
                problem.checkpoint({"scored": max(done, i + 1)})
        feasible = [w for w in candidates if problem.meets(w)]
        history = [{"front": len(front), "refined": len(refined), "feasible": len(feasible)}]
        problem.say(f"{self.name}: {len(front)} front width vectors and {len(refined)} aimed at the budget, "
                    f"{len(feasible)} within it")
        if not feasible:
            best = UniformSearch().search(problem).widths
            return self.result(problem, best, history, ["no front point met the budget; the uniform widths "
                                                        "meeting it were delivered"])
        best = max(feasible, key=lambda w: (problem.score_of(w), -problem.latency(w)))
        return self.result(problem, best, history)


@register_searcher
class ParecoSearch(FrontSearch):
    __doc__ = "PareCO (arXiv 2007.11752): widths optimized jointly with the weights by MOBO-RS.\n" + \
        FrontSearch.__doc__.split("\n", 1)[1]
    name = "pareco"
    shared_weights = "pareco"


@register_searcher
class TwoStageSearch(FrontSearch):
    __doc__ = "TwoStage (PareCO's baseline): random heterogeneous widths in training, MOBO-RS search after.\n" + \
        FrontSearch.__doc__.split("\n", 1)[1]
    name = "twostage"
    shared_weights = "twostage"


@register_searcher
class SlimUniformSearch(FrontSearch):
    """Slim (PareCO's baseline): the same pipeline with one width multiplier for every group.

    Args:
        visits: uniform width vectors visited over training.
        num_sampled: width vectors sampled per round (trained together for τ steps).
        refine: uniform width vectors tried at each budget's target.
        until_cost: successive fronts are taken until they reach this cost.
        seed: the proposals' random generator.
    """

    name = "slim-uniform"
    shared_weights = "slim-uniform"

    def __init__(self, visits: int = 60, num_sampled: int = 2, refine: int = 6, until_cost: float = 0.9,
                 seed: int = 0):
        super().__init__(visits=visits, num_sampled=num_sampled, refine=refine, until_cost=until_cost, seed=seed)
