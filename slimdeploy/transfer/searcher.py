"""Any searcher, run on the proxy and projected onto the target (Width Transfer, ALGORITHMS.md §2).

`TransferSearch` is a `Searcher` for the target's `SearchProblem`. Its `search` builds the proxy's
problem (the proxy's width space and grid, scored on the proxy), runs the wrapped searcher on it,
turns the best proxy widths into multipliers, projects them onto the target and bisects one
global scale against the target problem's limits. The proxy search is budgeted either on the
target's costs of its projected widths (``cost=target``: what the delivered model will cost, from
the target's fitted latency model) or on the proxy's own latency at its resolution, at the same
ratio to its original (``cost=proxy``, as the paper budgets the proxy on its own FLOPs).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import SlimdeployError
from ..search import LATENCY, BudgetUnreachable, Candidate, SearchProblem, SearchResult, Searcher
from ..space import Widths, atomic_write_text
from .projection import Projection, fit_scale
from .proxy import Proxy

TRANSFER_FORMAT = "slimdeploy.transfer/1"


class TransferSearch(Searcher):
    """Search widths on a proxy with `inner`, then project them onto the target."""

    shared_weights = None  # the proxy's weights are trained before; the target needs none

    def __init__(self, inner: Searcher, proxy: Proxy, projection: Projection, score: Callable[[Widths], float],
                 score_kind: str, shared: Any = None, proxy_costs: dict[str, Callable] | None = None,
                 info: dict | None = None, target_layout: dict | None = None):
        self.inner, self.proxy, self.projection = inner, proxy, projection
        self.proxy_score, self.shared, self.proxy_costs = score, shared, proxy_costs
        self.name = inner.name
        self.score_kind = f"{score_kind}, on the proxy ({proxy.spec.text()})"
        self.info, self.target_layout = dict(info or {}), target_layout
        self.last: dict | None = None
        self._scores: dict[Widths, float] = {}

    def score(self, widths: Widths) -> float:
        """The proxy's score of the proxy widths these target widths were projected from."""
        return self._scores[widths]

    def search(self, problem: SearchProblem) -> SearchResult:
        started = time.perf_counter()
        proxy_problem = self.proxy_problem(problem)
        try:
            found = self.inner.search(proxy_problem)
        except BudgetUnreachable as exc:
            if self.proxy_costs is None:  # the target's own costs: the pipeline's message fits
                raise
            raise SlimdeployError(f"on the proxy's own costs (cost=proxy) the {exc.constraint} limit cannot be met: "
                                  f"the smallest proxy widths reach {exc.lowest:.3g} against {exc.limit:.3g}; use "
                                  f"cost=target or a proxy closer to the model") from None
        multipliers = self.projection.multipliers(found.widths)
        scale, widths = fit_scale(self.projection, multipliers, problem)
        self._scores[widths] = found.score
        best = Candidate(widths, dict(problem.cost_of(widths)), found.score, problem.meets(widths))
        problem.say(f"projected the proxy's widths onto the target with global scale {scale:.3f}: latency "
                    f"{best.costs[LATENCY]:.3f}x (proxy score {found.score:.4f})")
        self.last = self._record(found, multipliers, scale, best, proxy_problem, problem,
                                 time.perf_counter() - started)
        notes = found.notes + [f"widths searched on a proxy ({self.proxy.spec.text()}) and projected with global "
                               f"scale {scale:.3f} (transfer.json)"]
        return SearchResult(best, self.inner.name, found.evaluated + [best], found.history, notes)

    def proxy_problem(self, problem: SearchProblem) -> SearchProblem:
        """The problem the wrapped searcher solves on the proxy, for the target `problem`."""
        if self.proxy_costs is None:  # cost=target: what the projected widths cost on the target
            costs = {name: (lambda w, name=name: problem.cost_of(self._projected(w, problem))[name])
                     for name in problem.costs}
            limits = dict(problem.limits)
        else:  # cost=proxy: the proxy's own costs, limits as the same share of its original
            costs = dict(self.proxy_costs)
            full_t, full_p = problem.cost_of(problem.full()), {k: f(self.proxy.analysis.space.full())
                                                               for k, f in costs.items()}
            limits = {k: (v if k == LATENCY else v / full_t[k] * full_p[k]) for k, v in problem.limits.items()
                      if k in costs}
        return SearchProblem(self.proxy.analysis.space, costs, limits, self.proxy_score, self.proxy.align,
                             problem.min_fraction, None, problem.say, log=problem.log, shared=self.shared)

    def _projected(self, proxy_widths: Widths, problem: SearchProblem) -> Widths:
        return self.projection.widths(self.projection.multipliers(proxy_widths), 1.0, problem.choices)

    def _record(self, found: SearchResult, multipliers: dict, scale: float, best: Candidate,
                proxy_problem: SearchProblem, problem: SearchProblem, seconds: float) -> dict:
        full = {g.name: g.width for g in self.projection.proxy}
        return {
            "format": TRANSFER_FORMAT, "method": self.inner.name,
            "proxy": {**self.proxy.describe(), **self.info, "fields": self.proxy.spec.to_json(),
                      "layout": self.proxy.layout.to_json()},
            "target": {"full_widths": {g.name: g.width for g in self.projection.target},
                       "layout": self.target_layout},
            "proxy_search": {"widths": dict(found.widths.widths), "full_widths": full,
                             "multipliers": {n: found.widths[n] / full[n] for n in full},
                             "costs": dict(found.best.costs), "limits": dict(proxy_problem.limits),
                             "score": found.score, "candidates": len(found.evaluated), "seconds": seconds},
            "stack": self.proxy.spec.stack, "cost": self.proxy.spec.cost, "mapping": self.projection.to_json(),
            "target_multipliers": multipliers, "global_scale": scale,
            "projected_widths": dict(best.widths.widths), "target_costs": dict(best.costs),
            "target_limits": dict(problem.limits),
            "feasible": best.feasible,
        }

    def save(self, path) -> dict:
        """Write the last projection as transfer.json; returns the summary report.json keeps."""
        import json

        atomic_write_text(path, json.dumps(self.last, indent=1, default=str) + "\n")
        r = self.last
        return {"file": path.name, "proxy": r["proxy"]["spec"], "global_scale": r["global_scale"],
                "proxy_score": r["proxy_search"]["score"], "proxy_candidates": r["proxy_search"]["candidates"],
                "stack": r["stack"], "cost": r["cost"]}
