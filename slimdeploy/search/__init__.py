"""Searchers choose widths under a budget; each registers by name so the CLI lists what exists."""
from __future__ import annotations

from ..errors import SlimdeployError
from .base import BudgetUnreachable, SearchProblem, SearchResult, Searcher
from .greedy import GreedySearch
from .uniform import UniformSearch

SEARCHERS: dict[str, type[Searcher]] = {cls.name: cls for cls in (UniformSearch, GreedySearch)}


def get_searcher(name: str) -> Searcher:
    if name not in SEARCHERS:
        raise SlimdeployError(f"unknown search method {name!r}; choose one of {', '.join(SEARCHERS)}")
    return SEARCHERS[name]()


__all__ = ["BudgetUnreachable", "SearchProblem", "SearchResult", "Searcher", "SEARCHERS", "get_searcher"]
