"""Adaptive width (ALGORITHMS.md §4): truncate the trained network along its learned path to the budget.

The shared weights are an `AdaptiveWidth` network (`slimdeploy.adaptive`) whose widths and
channel ordering were learned by backpropagation. Lowering the width quantile from the training
quantile k to k' shrinks every group in proportion to its learned width, D_g(k') =
⌊ln(1/(1−k'))/λ_g⌋ + 2, keeping its most important channels: the truncation path, parameterized
by t = ln(1/(1−k'))/ln(1/(1−k)) ∈ (0, 1] (t = 1: the learned widths). Each group's count is
raised to the nearest width the search may give it (on the latency staircase when known; the
channels added are the trained network's unused ones, which cost no accuracy). The search
bisects t on the costs and takes the widest point meeting every limit. Latency falls in steps
(kernels work on blocks of channels), so that point can leave much of the budget unused; with
`fill` (our addition, not the method's) the slack is then spent greedily: one step at a time, the
group whose next width adds the most of its importance mass (the share of its learned
distribution its kept channels hold) per unit of latency is widened, never past the path's top,
while every limit holds. `points` points along the path are scored: the truncation curve, returned
as the result's history.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..adaptive.config import AdaptiveTraining as _T
from ..errors import SlimdeployError
from ..space import Widths, atomic_write_text
from .base import LATENCY, SearchProblem, SearchResult, Searcher, register_searcher


@register_searcher
class AdaptiveSearch(Searcher):
    """Widths learned by backprop (adaptive width), truncated along the learned path to the budget.

    Args:
        points: points of the truncation curve scored (t = 1, …, 1/points).
        steps: bisection steps on the path (12 resolve t to 1/4096).
        fill: spend the latency the path point leaves unused on the groups gaining the most importance mass.
        quantile, init_width, prior_sigma, rate_prior_mean, rate_prior_std, rate_lr, teacher_weight,
        temperature, checkpoint_every: how the network is trained (`adaptive.AdaptiveTraining`);
            the epochs, learning rate, batch size and seed are the shared-weight training settings.

    Example:
        >>> get_searcher("adaptive", points=8).search(problem)  # problem.shared: an AdaptiveWidth
    """

    name = "adaptive"
    shared_weights = "adaptive"

    def __init__(self, points: int = 10, steps: int = 12, fill: bool = True, quantile: float = _T.quantile,
                 init_width: float = _T.init_width, prior_sigma: float = _T.prior_sigma,
                 rate_prior_mean: float = _T.rate_prior_mean, rate_prior_std: float = _T.rate_prior_std,
                 rate_lr: float = _T.rate_lr, teacher_weight: float = _T.teacher_weight,
                 temperature: float = _T.temperature, checkpoint_every: int = _T.checkpoint_every):
        if points < 1 or steps < 1:
            raise SlimdeployError(f"the adaptive search needs points >= 1 and steps >= 1, got {points} and {steps}")
        self.points, self.steps, self.fill = points, steps, fill
        self.quantile, self.init_width, self.prior_sigma = quantile, init_width, prior_sigma
        self.rate_prior_mean, self.rate_prior_std, self.rate_lr = rate_prior_mean, rate_prior_std, rate_lr
        self.teacher_weight, self.temperature, self.checkpoint_every = teacher_weight, temperature, checkpoint_every
        _T.from_settings(self.get_params()).check()  # refuse bad training options before any work

    def search(self, problem: SearchProblem) -> SearchResult:
        net = problem.shared
        if net is None or not hasattr(net, "truncated"):
            raise SlimdeployError("the adaptive search truncates an adaptive-width network; none was given "
                                  "(SearchProblem.shared)")
        problem.resume()  # restores the scores of an interrupted search
        top = self.widths_at(problem, net, 1.0)
        notes = [f"learned widths: {net.width_fraction():.1%} of the channels"] + net.notes()
        if problem.meets(top):
            t_best, best = 1.0, top
            notes.append("the learned widths already meet the budget")
        else:
            problem.require_reachable()
            t_best, best = self._bisect(problem, net)
            if self.fill:
                path_point, best = best, self._fill(problem, net, best, top)
                if best != path_point:
                    notes.append(f"budget slack filled from {problem.latency(path_point):.3f}x to "
                                 f"{problem.latency(best):.3f}x: " + ", ".join(
                                     f"{g} {path_point[g]}->{best[g]}" for g in best.widths if best[g] != path_point[g]))
        history = self._curve(problem, net, sorted({1.0, t_best, *(i / self.points for i in range(1, self.points))},
                                                  reverse=True))
        problem.say(f"adaptive: truncated to t={t_best:.3f} of the learned widths (quantile "
                    f"{_quantile(net.quantile, t_best):.4f}), latency {problem.latency(best):.3f}x, "
                    f"score {problem.score_of(best):.4f}")
        return self.result(problem, best, history, notes)

    @staticmethod
    def _fill(problem: SearchProblem, net, widths: Widths, top: Widths) -> Widths:
        """Widen one group a step at a time (most importance mass gained per latency added) while the limits hold."""
        while True:
            latency, best = problem.latency(widths), None
            for g in problem.space:
                wider = next((c for c in problem.choices(g.name) if c > widths[g.name]), None)
                if wider is None or wider > top[g.name]:
                    continue
                trial = widths.replace(**{g.name: wider})
                if not problem.meets(trial):
                    continue
                gain = net.kept_mass(g.name, wider) - net.kept_mass(g.name, widths[g.name])
                cost = problem.latency(trial) - latency
                rank = float("inf") if cost <= 1e-9 else gain / cost
                if (gain > 0 or cost <= 1e-9) and (best is None or rank > best[0]):
                    best = (rank, trial)
            if best is None:
                return widths
            widths = best[1]

    @staticmethod
    def widths_at(problem: SearchProblem, net, t: float) -> Widths:
        """The widths at point t of the truncation path, each raised to the nearest allowed width."""
        counts = net.truncated(_quantile(net.quantile, t)) if t < 1 else net.learned_widths()
        out = {}
        for g in problem.space:
            choices = problem.choices(g.name)
            out[g.name] = min((c for c in choices if c >= counts[g.name]), default=choices[-1])
        return Widths(problem.space.fingerprint, out)

    def _bisect(self, problem: SearchProblem, net) -> tuple[float, Widths]:
        low, high = 0.0, 1.0  # low meets (at worst every group at its narrowest), high does not
        best = self.widths_at(problem, net, 0.0)
        for _ in range(self.steps):
            mid = (low + high) / 2
            widths = self.widths_at(problem, net, mid)
            if problem.meets(widths):
                low, best = mid, widths
            else:
                high = mid
        return low, best

    def _curve(self, problem: SearchProblem, net, ts: list[float]) -> list[dict]:
        """Scores along the path (each widths once), checkpointed so a resumed search does not rescore."""
        history, seen = [], set()
        for t in ts:
            widths = self.widths_at(problem, net, t)
            if widths in seen:
                continue
            seen.add(widths)
            score = problem.score_of(widths)
            problem.checkpoint({"scored": len(seen)})
            history.append({"t": round(t, 6), "quantile": round(_quantile(net.quantile, t), 6),
                            **problem.cost_of(widths), "score": score, "feasible": problem.meets(widths),
                            "widths": dict(widths.widths)})
        return history

    def write_figures(self, out: Path, results: list[tuple[str, SearchResult]], title: str) -> None:
        """truncation.json and truncation.png: score against latency along the truncation path."""
        from ..plots import curve_plot

        curve = sorted({h["latency"]: h for _, r in results for h in r.history}.values(), key=lambda h: h[LATENCY])
        chosen = {label: {"costs": r.best.costs, "score": r.best.score, "widths": dict(r.widths.widths)}
                  for label, r in results}
        data = {"method": self.name, "curve": curve, "chosen": chosen, "notes": results[0][1].notes if results else []}
        atomic_write_text(Path(out) / "truncation.json", json.dumps(data, indent=1) + "\n")
        curve_plot(Path(out) / "truncation.png", {"adaptive network truncated": [(h[LATENCY], h["score"]) for h in curve]},
                   chosen=[(c["costs"][LATENCY], c["score"], label) for label, c in chosen.items()],
                   title=title, y_label="accuracy on the search split (truncated, BN recalibrated)")


def _quantile(k: float, t: float) -> float:
    """The quantile k' with ln(1/(1−k')) = t·ln(1/(1−k))."""
    return 1 - (1 - k) ** t
