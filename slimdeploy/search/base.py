"""One interface for every searcher: configure in `__init__`, `search(problem) -> SearchResult`.

A `SearchProblem` holds the width space, a vector of costs per candidate (latency as a ratio to
the original, on one or more runtimes; MACs; params), the limit each cost must stay under, and an
accuracy estimate (`score`, higher is better). Searchers register by name with
`@register_searcher`, so the CLI lists what exists and checks `--search-option key=value`
against the constructor.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import SlimdeployError
from ..space import MIN_WIDTH_FRACTION, Widths, WidthSpace
from .log import SearchLog
from .pareto import pareto_front

LATENCY = "latency"


class BudgetUnreachable(SlimdeployError):
    """No widths the search may try meet the budget; says which constraint and how close it got."""

    def __init__(self, message: str, constraint: str, lowest: float, limit: float):
        super().__init__(message)
        self.constraint, self.lowest, self.limit = constraint, lowest, limit

    @property
    def lowest_ratio(self) -> float:  # the latency figure, as the pipeline reports it
        return self.lowest


@dataclass(frozen=True)
class Candidate:
    """Widths with every cost and the accuracy estimate."""

    widths: Widths
    costs: dict[str, float]
    score: float
    feasible: bool

    def to_json(self) -> dict:
        return {"widths": dict(self.widths.widths), "costs": dict(self.costs), "score": self.score,
                "feasible": self.feasible}


@dataclass
class SearchProblem:
    """What a searcher needs: the space, the costs and their limits, and an accuracy estimate.

    `costs` maps a name to widths → value ("latency" is the ratio to the original's latency,
    measured or predicted; "macs" and "params" are counts; other runtimes' latencies may be
    added under their own names); `limits` gives the most each may be. `score(widths)`
    estimates accuracy, higher is better. `offered`, when given, lists per group the widest
    width of each step of its latency staircase; widths in between cost channels and save nothing.
    Costs and scores are cached per widths, and every scored candidate is kept in `evaluated`.
    """

    space: WidthSpace
    costs: dict[str, Callable[[Widths], float]]
    limits: dict[str, float]
    score: Callable[[Widths], float]
    align: int = 8
    min_fraction: float = MIN_WIDTH_FRACTION
    offered: dict[str, list[int]] | None = None
    say: Callable[[str], None] = lambda text: None
    log: "SearchLog | None" = None  # where a long search checkpoints its progress and scores
    shared: Any = None              # the shared weights scoring candidates, for searchers that use more of them
    _costs: dict = field(default_factory=dict, repr=False)
    _scores: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.limits) - set(self.costs))
        if unknown:
            raise SlimdeployError(f"limits on {', '.join(unknown)} have no cost function to check them")

    # -- costs and scores --------------------------------------------------------------------
    def cost_of(self, widths: Widths) -> dict[str, float]:
        if widths not in self._costs:
            self._costs[widths] = {name: float(fn(widths)) for name, fn in self.costs.items()}
        return self._costs[widths]

    def latency(self, widths: Widths) -> float:
        return self.cost_of(widths)[LATENCY]

    def meets(self, widths: Widths) -> bool:
        costs = self.cost_of(widths)
        return all(costs[name] <= limit for name, limit in self.limits.items())

    def score_of(self, widths: Widths) -> float:
        if widths not in self._scores:
            self._scores[widths] = float(self.score(widths))
        return self._scores[widths]

    def scores(self) -> dict[Widths, float]:
        """Every score computed so far (a searcher's checkpoint keeps them)."""
        return dict(self._scores)

    def restore_scores(self, scores: dict[Widths, float]) -> None:
        self._scores.update(scores)

    def checkpoint(self, state: dict) -> None:
        """Save a searcher's progress (and every score so far) when the problem has a log."""
        if self.log is not None:
            self.log.save(state, self._scores)

    def resume(self) -> dict | None:
        """The last saved progress of this search (scores restored), or None to start afresh."""
        if self.log is None:
            return None
        saved = self.log.load(self.space)
        if saved is None:
            return None
        state, scores = saved
        self._scores.update(scores)
        return state

    def evaluate(self, widths: Widths) -> Candidate:
        return Candidate(widths, dict(self.cost_of(widths)), self.score_of(widths), self.meets(widths))

    @property
    def evaluated(self) -> list[Candidate]:
        """Every candidate scored so far, in the order it was first scored."""
        return [self.evaluate(w) for w in self._scores]

    @property
    def target_ratio(self) -> float:
        return self.limits.get(LATENCY, float("inf"))

    # -- the space a searcher moves in -------------------------------------------------------
    def choices(self, name: str) -> list[int]:
        """The widths group `name` may take: its `choices`, narrowed to the latency staircase's steps."""
        choices = self.space.group(name).choices(self.align, self.min_fraction)
        steps = (self.offered or {}).get(name)
        if steps:
            kept = [w for w in choices if w in set(steps)] or choices[-1:]
            return sorted(set(kept) | {choices[-1]})
        return choices

    def smallest(self) -> Widths:
        return Widths(self.space.fingerprint, {g.name: self.choices(g.name)[0] for g in self.space})

    def full(self) -> Widths:
        return self.space.full()

    def uniform(self, multiplier: float) -> Widths:
        """One multiplier for every group, on the choices (each group's nearest choice at or above it)."""
        out = {}
        for g in self.space:
            wanted = self.space.uniform(max(multiplier, 1e-6), self.align).widths[g.name]
            choices = self.choices(g.name)
            out[g.name] = min((c for c in choices if c >= wanted), default=choices[-1])
        return Widths(self.space.fingerprint, out)

    def snap(self, widths: Widths) -> Widths:
        """Each width raised to the widest offered width on its latency step (channels for free)."""
        if not self.offered:
            return widths
        out = {}
        for name, w in widths.widths.items():
            out[name] = min((s for s in self.offered.get(name, ()) if s >= w), default=w)
        return Widths(widths.structure, out)

    def step_down(self, name: str, current: int, step: int = 1) -> int:
        """`step` choices narrower than `current` for group `name` (the narrowest when fewer remain)."""
        lower = [c for c in self.choices(name) if c < current]
        return lower[max(0, len(lower) - step)] if lower else current

    def require_reachable(self) -> None:
        """Fail early, naming the constraint and the lowest value reachable, when the smallest widths miss it."""
        costs = self.cost_of(self.smallest())
        for name, limit in self.limits.items():
            if costs[name] > limit:
                shown = f"{costs[name]:.2f}x of the original" if name == LATENCY else f"{costs[name]:,.0f}"
                wanted = f"{limit:.2f}x" if name == LATENCY else f"{limit:,.0f}"
                raise BudgetUnreachable(
                    f"the {name} budget cannot be met: the smallest widths this search allows reach {shown} "
                    f"(budget {wanted})", name, costs[name], limit)


@dataclass
class SearchResult:
    """The chosen candidate, the Pareto front of everything evaluated, and how the search went."""

    best: Candidate
    method: str
    evaluated: list[Candidate] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def widths(self) -> Widths:
        return self.best.widths

    @property
    def latency_ratio(self) -> float:
        return self.best.costs[LATENCY]

    @property
    def score(self) -> float:
        return self.best.score

    @property
    def front(self) -> list[Candidate]:
        """The candidates no other evaluated candidate beats on both score and latency."""
        return pareto_front(self.evaluated, LATENCY)


class Searcher:
    """Base class: `name`, parameters stored by `__init__`, `search(problem) -> SearchResult`.

    A searcher whose `shared_weights` names a kind ("supernet", ...) scores candidates on weights
    trained for many widths at once; the pipeline trains them first (`slimdeploy.shared_weights`)
    and hands the searcher their accuracy estimate.
    """

    name = ""
    shared_weights: str | None = None

    def search(self, problem: SearchProblem) -> SearchResult:
        raise NotImplementedError

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in _parameters(type(self))}

    def result(self, problem: SearchProblem, best: Widths, history=None, notes=None) -> SearchResult:
        """A result whose front covers every candidate the problem scored (the best one included)."""
        chosen = problem.evaluate(best)
        return SearchResult(chosen, self.name, problem.evaluated, history or [], notes or [])


SEARCHERS: dict[str, type[Searcher]] = {}


def register_searcher(cls: type[Searcher]) -> type[Searcher]:
    """Class decorator: make a searcher available by its `name` (CLI `--method NAME`)."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name to be registered")
    SEARCHERS[cls.name] = cls
    return cls


def get_searcher(name: str, **params) -> Searcher:
    """The searcher registered as `name`, constructed with `params` (checked against its constructor)."""
    if name not in SEARCHERS:
        raise SlimdeployError(f"unknown search method {name!r}; choose one of {', '.join(sorted(SEARCHERS))}")
    allowed = _parameters(SEARCHERS[name])
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
        raise SlimdeployError(f"search method {name!r} has no option {', '.join(map(repr, unknown))}; its options are {known}")
    return SEARCHERS[name](**params)


def searcher_options(name: str) -> dict[str, object]:
    """A searcher's constructor parameters with their defaults."""
    return _parameters(SEARCHERS[name])


def parse_search_options(name: str, items: list[str]) -> dict[str, object]:
    """``["population=30", "mutation=0.2"]`` → typed keyword arguments for `get_searcher(name, ...)`.

    Each value is converted to the type of the parameter's default; unknown keys are refused
    with the list of known ones.
    """
    defaults = searcher_options(name) if name in SEARCHERS else {}
    out: dict[str, object] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise SlimdeployError(f"--search-option {item!r} must look like key=value")
        if key not in defaults:
            known = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
            raise SlimdeployError(f"search method {name!r} has no option {key!r}; its options are {known}")
        out[key] = _convert(text.strip(), defaults[key], key)
    return out


def _convert(text: str, default: object, key: str) -> object:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise SlimdeployError(f"search option {key}={text!r} must be a {type(default).__name__} "
                              f"(default {default!r})") from None
    return text


def _parameters(cls: type) -> dict[str, object]:
    signature = inspect.signature(cls.__init__)
    return {p.name: p.default for p in list(signature.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
