"""CafeNet's search (arXiv 2102.05258): evolution over latency-sensitive bins on a locally-free supernet."""
from __future__ import annotations

import dataclasses

from ..errors import SlimdeployError
from .base import SearchProblem, SearchResult, register_searcher
from .evolution import EvolutionSearch


@register_searcher
class CafeNetSearch(EvolutionSearch):
    """Evolutionary search (BCNet defaults) where each group moves only between its latency bins.

    Args:
        zone: free-zone size r in width steps (0: fixed prefix sharing, the plain supernet's).
        placements: candidate placements per width, scored by min-min in training and search.
        granularity: bins per group on average (Δ = latency range / (granularity × groups)).
        population, generations, parents, mutations, crossovers, mutation_prob, lower_bound, jitter,
        seed: the evolution's (see `evolution`).

    Example:
        >>> compress(model, "out", latency="0.5x", method="cafenet", data="fashion-mnist",
        ...          search_options={"zone": 1, "placements": 2})
    """

    name = "cafenet"
    shared_weights = "cafenet"

    def __init__(self, zone: int = 1, placements: int = 2, granularity: float = 4.0, population: int = 50,
                 generations: int = 20, parents: int = 10, mutations: int = 0, crossovers: int = 0,
                 mutation_prob: float = 0.1, lower_bound: float = 0.8, jitter: float = 0.3, seed: int = 0):
        super().__init__(population=population, generations=generations, parents=parents, mutations=mutations,
                         crossovers=crossovers, mutation_prob=mutation_prob, lower_bound=lower_bound, jitter=jitter,
                         seed=seed)
        self.zone, self.placements, self.granularity = zone, placements, granularity
        if zone < 0 or placements < 1 or not granularity > 0:
            raise SlimdeployError("search method 'cafenet' needs zone >= 0, placements >= 1 and granularity > 0")

    def search(self, problem: SearchProblem) -> SearchResult:
        bins = getattr(problem.shared, "bins", None)
        if bins is None:
            raise SlimdeployError("search method 'cafenet' needs its locally-free supernet; run it through compress "
                                  "or search")
        return super().search(dataclasses.replace(problem, offered=bins))
