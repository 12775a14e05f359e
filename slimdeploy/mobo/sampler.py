"""MOBO-RS: propose widths for target costs from a history (PareCO, arXiv 2007.11752; ALGORITHMS.md §5).

Per proposal: fit a GP on the standardized losses and one with an additive kernel on the
standardized costs; draw a target cost from bins over [lowest cost, 1] (Pareto-aware weights,
or uniform); then binary-search the preference w so that the minimizer of the augmented
Tchebyshev scalarization of the two optimistic bounds (mean − √β·σ, i.e. botorch's UCB on the
negated objectives) has a true cost within `tolerance` of the target. Before `prior_points`
visits have losses (fewer when the width grid has fewer uniform vectors), proposals are uniform
widths s·𝟙, s ~ U[α_min, 1], and the full network is added once when that many are reached.

Choices where §5 leaves one [Ours]:
* the acquisition is maximized over `raw_samples` sampled candidates, not by gradient
  restarts: half drawn uniformly in the box, half around a random uniform level
  (α_d = s + N(0, 0.15²)), so every cost level has candidates; visited widths are excluded;
* a proposal is the candidate whose true cost came closest to the target during the search;
* candidates are snapped to each group's width choices (multiples of the alignment).
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np

from .front import bin_edges, bin_weights
from .gp import Surrogate, standardize
from .history import History
from .scalarize import preference, tchebyshev

Cost = Callable[[Mapping[str, int]], float]


class MoboSampler:
    """Widths proposals for one width space: `propose(history, n, rng)`; `uniform(s)` snaps a multiplier.

    Args:
        choices: per group, its allowed widths (ascending).
        cost: widths → cost (latency ratio to the original, or MACs ratio).
        beta: UCB exploration (bound = mean − √β·σ).
        reference: the scalarization's reference point z, in standardized units.
        rho: the augmentation weight of the scalarization.
        bins: target-cost bins over [cost of the narrowest widths, 1].
        pareto_aware: weight bins by the front's area (PareCO) instead of uniformly (Joslim).
        raw_samples: candidates the acquisition is maximized over.
        search_steps: binary-search steps on the preference.
        tolerance: a proposal within this of the target cost ends the binary search.
        prior_points: scored visits before the surrogates are used.
    """

    def __init__(self, choices: Mapping[str, list[int]], cost: Cost, *, beta: float = 0.1, reference: float = -3.0,
                 rho: float = 1e-6, bins: int = 50, pareto_aware: bool = True, raw_samples: int = 1000,
                 search_steps: int = 10, tolerance: float = 0.02, prior_points: int = 20, seed: int = 0):
        self.choices = {g: sorted(c) for g, c in choices.items()}
        self.groups = list(self.choices)
        self.cost = cost
        self.beta, self.reference, self.rho = beta, reference, rho
        self.bins, self.pareto_aware, self.raw_samples = bins, pareto_aware, raw_samples
        self.search_steps, self.tolerance, self.prior_points, self.seed = search_steps, tolerance, prior_points, seed
        self.gp_seconds: list[float] = []   # surrogate fit + acquisition time per proposal round
        self.lowest_cost = cost(self.smallest())
        self._grid = {g: np.asarray(c, dtype=np.int64) for g, c in self.choices.items()}
        self._loss_gp = Surrogate(len(self.groups), seed=seed)
        self._cost_gp = Surrogate(len(self.groups), additive=True, seed=seed)
        levels = {tuple(sorted(self.uniform(s).items())) for s in np.linspace(0.0, 1.0, 401)}
        self.warmup = max(2, min(prior_points, len(levels)))  # a coarse grid has fewer uniform vectors

    def state(self) -> dict[str, list[float] | None]:
        """Where the surrogates' next fits start (saved in checkpoints, so a resumed run proposes the same)."""
        return {"loss": self._loss_gp.theta, "cost": self._cost_gp.theta}

    def restore(self, state: Mapping[str, list[float] | None]) -> None:
        self._loss_gp.start_from(state.get("loss"))
        self._cost_gp.start_from(state.get("cost"))

    # -- widths from multipliers --------------------------------------------------------------
    def history(self) -> History:
        return History(self.groups, {g: c[-1] for g, c in self.choices.items()},
                       {g: c[0] for g, c in self.choices.items()})

    def smallest(self) -> dict[str, int]:
        return {g: c[0] for g, c in self.choices.items()}

    def full(self) -> dict[str, int]:
        return {g: c[-1] for g, c in self.choices.items()}

    def snap(self, alpha: np.ndarray) -> dict[str, int]:
        """Widths nearest to α ∈ [0, 1]^D (0 = each group's narrowest choice, 1 = full)."""
        return dict(zip(self.groups, (int(w) for w in self.snap_rows(np.asarray(alpha)[None, :])[0])))

    def snap_rows(self, alphas: np.ndarray) -> np.ndarray:
        """Rows of α snapped to each group's nearest width choice (n × D widths; ties go to the wider)."""
        out = np.empty(alphas.shape, dtype=np.int64)
        for d, g in enumerate(self.groups):
            c = self._grid[g]
            wanted = c[0] + np.clip(alphas[:, d], 0.0, 1.0) * (c[-1] - c[0])
            gap = np.abs(c[None, ::-1] - wanted[:, None])  # reversed: argmin takes the wider of two ties
            out[:, d] = c[::-1][np.argmin(gap, axis=1)]
        return out

    def uniform(self, s: float) -> dict[str, int]:
        return self.snap(np.full(len(self.groups), s))

    # -- proposals ------------------------------------------------------------------------------
    def propose(self, history: History, n: int, rng: np.random.Generator,
                target: float | None = None, cost: Cost | None = None) -> list[dict[str, int]]:
        """`n` new widths: uniform while the history is short, else MOBO-RS (each for a drawn or given target)."""
        scored = history.scored()
        if len(scored) < self.warmup:
            return self._warmup(history, n, rng)
        started = time.perf_counter()
        cost = cost or self.cost
        X = history.alphas(scored)
        losses, costs = np.array([v.loss for v in scored]), np.array([v.cost for v in scored])
        loss_gp = self._loss_gp.fit(X, standardize(losses))
        cost_gp = self._cost_gp.fit(X, standardize(costs))
        candidates = self._candidates(history, rng)
        mean_l, std_l = loss_gp.predict(candidates)
        mean_c, std_c = cost_gp.predict(candidates)
        bounds = np.stack([mean_l - np.sqrt(self.beta) * std_l, mean_c - np.sqrt(self.beta) * std_c], axis=1)
        edges = bin_edges(min(self.lowest_cost, 0.999), 1.0, self.bins)
        weights = (bin_weights(list(zip(costs, losses)), edges, floor=0.05) if self.pareto_aware
                   else np.full(self.bins, 1.0 / self.bins))
        out = []
        for _ in range(n):
            if target is None:
                j = rng.choice(self.bins, p=weights)
                t = float(rng.uniform(edges[j], edges[j + 1]))
            else:
                t = target
            out.append(self._hit(candidates, bounds, t, cost))
        self.gp_seconds.append(time.perf_counter() - started)
        return out

    def _warmup(self, history: History, n: int, rng: np.random.Generator) -> list[dict[str, int]]:
        """Uniform s·𝟙, s ~ U[α_min, 1], preferring levels not visited yet; the full network once the warm-up fills."""
        seen = [v.widths for v in history.visits]
        out = []
        if len(history) + n >= self.warmup and self.full() not in seen:
            out.append(self.full())
        while len(out) < n:
            for _ in range(50):
                widths = self.uniform(float(rng.uniform(0.0, 1.0)))
                if widths not in seen and widths not in out:
                    break
            out.append(widths)
        return out

    def _candidates(self, history: History, rng: np.random.Generator) -> np.ndarray:
        d = len(self.groups)
        half = self.raw_samples // 2
        box = rng.uniform(0.0, 1.0, (half, d))
        level = np.clip(rng.uniform(0.0, 1.0, (self.raw_samples - half, 1)) + rng.normal(0, 0.15, (self.raw_samples - half, d)),
                        0.0, 1.0)
        rows = np.unique(self.snap_rows(np.concatenate([box, level])), axis=0)
        seen = {tuple(v.widths[g] for g in self.groups) for v in history.visits}
        rows = np.array([r for r in rows if tuple(int(x) for x in r) not in seen]).reshape(-1, d)
        lowest = np.array([self._grid[g][0] for g in self.groups])
        span = np.maximum(np.array([self._grid[g][-1] for g in self.groups]) - lowest, 1)
        return (rows - lowest) / span

    def _hit(self, candidates: np.ndarray, bounds: np.ndarray, target: float, cost: Cost) -> dict[str, int]:
        """Binary search on w: the scalarization's minimizer whose true cost is closest to `target`."""
        lo, hi, w = 0.0, 1.0, 0.5
        best, best_gap = None, float("inf")
        reference = np.full(2, self.reference)
        for _ in range(self.search_steps):
            i = int(np.argmin(tchebyshev(bounds, preference(w), reference, self.rho)))
            widths = self.snap(candidates[i])
            c = cost(widths)
            if abs(c - target) < best_gap:
                best, best_gap = widths, abs(c - target)
            if abs(c - target) <= self.tolerance:
                break
            if c > target:
                lo = w  # too costly: weigh the cost more
            else:
                hi = w
            w = (lo + hi) / 2
        return best
