"""Searchers choose widths under a budget; each registers by name so the CLI lists what exists."""
from __future__ import annotations

from . import adaptive, cafenet, evolution, greedy, shared_front, slim, uniform  # noqa: F401  (each registers its searcher)
from .base import (LATENCY, SEARCHERS, BudgetUnreachable, Candidate, SearchProblem, SearchResult, Searcher,
                   get_searcher, parse_search_options, register_searcher, searcher_options)
from .log import SearchLog
from .pareto import front_area, non_dominated, pareto_front

__all__ = ["BudgetUnreachable", "Candidate", "LATENCY", "SEARCHERS", "SearchProblem", "SearchResult", "Searcher",
           "SearchLog", "front_area", "get_searcher", "non_dominated", "parse_search_options", "pareto_front",
           "register_searcher", "searcher_options"]
