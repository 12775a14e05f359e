"""Evolutionary search under the budget on shared-weight scores (the BCNet/CafeNet searcher's scheme).

Each generation keeps the `parents` best candidates and breeds `mutations` mutants (each gene
redrawn from its group's choices with probability `mutation_prob`) and `crossovers` children
(each gene from either of two parents). Only feasible candidates enter: every cost within its
limit, and latency at least `lower_bound` × the target (narrower networks rarely win). The first
population is the uniform answer plus per-group jitter around it; the search checkpoints after
every generation and resumes from its log.
"""
from __future__ import annotations

import math
import random

from ..progress import bar, progress
from ..space import Widths
from .base import SearchProblem, SearchResult, Searcher, register_searcher
from .uniform import UniformSearch


@register_searcher
class EvolutionSearch(Searcher):
    """Population-based search over per-group widths.

    Args:
        population: candidates per generation.
        generations: generations bred after the first population.
        parents: best candidates kept and bred from.
        mutations: mutants per generation (0: half the population).
        crossovers: crossover children per generation (0: half the population).
        mutation_prob: chance that a mutant redraws each group's width.
        lower_bound: feasible candidates have latency >= lower_bound × the target.
        jitter: spread (log scale) of the first population's per-group multipliers around uniform.
        seed: the search's own random generator.

    Example:
        >>> get_searcher("evolution", population=20, generations=5).search(problem)
    """

    name = "evolution"
    shared_weights = "supernet"

    def __init__(self, population: int = 50, generations: int = 20, parents: int = 10, mutations: int = 0,
                 crossovers: int = 0, mutation_prob: float = 0.1, lower_bound: float = 0.8, jitter: float = 0.3,
                 seed: int = 0):
        self.population, self.generations, self.parents = population, generations, parents
        self.mutations, self.crossovers, self.mutation_prob = mutations, crossovers, mutation_prob
        self.lower_bound, self.jitter, self.seed = lower_bound, jitter, seed

    def search(self, problem: SearchProblem) -> SearchResult:
        full = problem.full()
        if problem.meets(full):
            return self.result(problem, full, notes=["the original already meets the budget"])
        problem.require_reachable()
        saved = problem.resume()  # first: restores the scores of everything evaluated before
        uniform = UniformSearch().search(problem).widths
        if saved:
            rng = random.Random()
            rng.setstate(_tuples(saved["rng"]))
            start, population = saved["generation"], [Widths(full.structure, w) for w in saved["population"]]
            history = saved["history"]
            problem.say(f"resuming the evolution at generation {start}")
        else:
            rng, start, history = random.Random(self.seed), 0, []
            population = self._first(problem, uniform, rng)
        for generation in range(start, self.generations + 1):
            if generation > 0:
                population = self._breed(problem, population, rng)
            scored = sorted(population, key=problem.score_of, reverse=True)
            population = scored[: min(self.parents, self.population)]
            best = population[0]
            history.append({"generation": generation, "best_score": problem.score_of(best),
                            "best_latency": problem.latency(best), "evaluated": len(problem.scores())})
            note = (f"best score {problem.score_of(best):.4f} at latency {problem.latency(best):.3f}x "
                    f"({len(problem.scores())} scored)")
            progress(problem.say, "evolution generations", generation, self.generations,
                     f"{bar(generation, self.generations)} evolution: {note}", note)
            problem.checkpoint({"generation": generation + 1, "population": [dict(w.widths) for w in population],
                                "rng": rng.getstate(), "history": history})
        best = max(population + [uniform], key=problem.score_of)
        notes = [] if best != uniform else ["the uniform widths scored best on the supernet"]
        return self.result(problem, best, history, notes)

    def _feasible(self, problem: SearchProblem, widths: Widths) -> bool:
        return problem.meets(widths) and problem.latency(widths) >= self.lower_bound * problem.target_ratio

    def _first(self, problem: SearchProblem, uniform: Widths, rng: random.Random) -> list[Widths]:
        population, seen = [uniform], {uniform}
        for _ in range(self.population * 50):
            if len(population) >= self.population:
                break
            candidate = self._jittered(problem, uniform, rng)
            if candidate not in seen and self._feasible(problem, candidate):
                seen.add(candidate)
                population.append(candidate)
        return population

    def _jittered(self, problem: SearchProblem, around: Widths, rng: random.Random) -> Widths:
        out = {}
        for g in problem.space:
            choices = problem.choices(g.name)
            wanted = around[g.name] * math.exp(rng.gauss(0.0, self.jitter))
            out[g.name] = min(choices, key=lambda c: abs(c - wanted))
        return Widths(around.structure, out)

    def _breed(self, problem: SearchProblem, parents: list[Widths], rng: random.Random) -> list[Widths]:
        children, seen = list(parents), set(parents)
        half = max(1, self.population // 2)
        for count, make in ((self.mutations or half, self._mutant), (self.crossovers or half, self._child)):
            made = 0
            for _ in range(count * 20):
                if made >= count:
                    break
                candidate = make(problem, parents, rng)
                if candidate not in seen and self._feasible(problem, candidate):
                    seen.add(candidate)
                    children.append(candidate)
                    made += 1
        return children

    def _mutant(self, problem: SearchProblem, parents: list[Widths], rng: random.Random) -> Widths:
        parent = rng.choice(parents)
        return Widths(parent.structure, {g.name: rng.choice(problem.choices(g.name))
                                         if rng.random() < self.mutation_prob else parent[g.name]
                                         for g in problem.space})

    def _child(self, problem: SearchProblem, parents: list[Widths], rng: random.Random) -> Widths:
        a, b = rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
        return Widths(a.structure, {g.name: (a if rng.random() < 0.5 else b)[g.name] for g in problem.space})


def _tuples(value):
    """JSON turned random's state tuples into lists; setstate wants tuples back."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
