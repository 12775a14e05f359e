"""One interface for every searcher: configure in __init__, `search(problem) -> SearchResult`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import SlimdeployError
from ..space import Widths, WidthSpace


class BudgetUnreachable(SlimdeployError):
    """No widths the search tried meet the budget."""

    def __init__(self, message: str, lowest_ratio: float):
        super().__init__(message)
        self.lowest_ratio = lowest_ratio


@dataclass
class SearchProblem:
    """What a searcher needs: the space, measured latency, caps and an accuracy estimate.

    `latency(widths)` is the latency (measured, or predicted by a fitted model) as a ratio to the
    original; `within_caps` checks the MACs/params caps; `score(widths)` estimates accuracy
    (higher is better). `offered`, when given, lists per group the widest width of each step of
    its latency staircase; widths in between cost channels and save nothing.
    """

    space: WidthSpace
    latency: Callable[[Widths], float]
    target_ratio: float
    score: Callable[[Widths], float]
    within_caps: Callable[[Widths], bool] = lambda w: True
    align: int = 8
    say: Callable[[str], None] = lambda text: None
    offered: dict[str, list[int]] | None = None  # per group, widths where latency changes (staircase)

    def meets(self, widths: Widths) -> bool:
        return self.within_caps(widths) and self.latency(widths) <= self.target_ratio

    def snap(self, widths: Widths) -> Widths:
        """Each width raised to the widest offered width on its latency step (channels for free)."""
        if not self.offered:
            return widths
        out = {}
        for name, w in widths.widths.items():
            out[name] = min((s for s in self.offered.get(name, ()) if s >= w), default=w)
        return Widths(widths.structure, out)

    def step_down(self, name: str, current: int, step: int, unit: int) -> int:
        """A narrower width for group `name`: about `step` channels less, on a lower latency step."""
        wanted = max(unit, current - step)
        steps = (self.offered or {}).get(name)
        if not steps:
            return wanted
        lower = [s for s in steps if s < current]
        if not lower:
            return current
        at_most = [s for s in lower if s <= wanted]
        return max(at_most) if at_most else max(lower)

    def smallest(self) -> Widths:
        return Widths(self.space.fingerprint, {g.name: g.unit(self.align) for g in self.space})


@dataclass
class SearchResult:
    widths: Widths
    latency_ratio: float
    score: float
    method: str
    history: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Searcher:
    """Base class; subclasses set `name` and implement `search`."""

    name = ""

    def search(self, problem: SearchProblem) -> SearchResult:
        raise NotImplementedError


def require_reachable(problem: SearchProblem) -> None:
    """Fail early, naming the lowest latency reachable, when even the smallest widths miss the budget."""
    smallest = problem.smallest()
    ratio = problem.latency(smallest)
    if ratio > problem.target_ratio or not problem.within_caps(smallest):
        raise BudgetUnreachable(
            f"the budget cannot be met: the smallest widths this search allows reach {ratio:.2f}x of the "
            f"original latency (budget {problem.target_ratio:.2f}x)", ratio)
