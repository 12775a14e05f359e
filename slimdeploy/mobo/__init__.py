"""Multi-objective Bayesian optimization of widths (PareCO's MOBO-RS, arXiv 2007.11752).

Small modules with one job each: `scalarize` (augmented Tchebyshev, random preferences),
`front` (successive Pareto fronts, Pareto-aware target bins), `gp` (the Gaussian-process
surrogates), `sampler` (UCB acquisition and the binary search on the preference that hits a
target cost), `history` (the visited widths with their loss and cost).
"""
from __future__ import annotations

from .front import bin_weights, successive_fronts
from .history import History
from .sampler import MoboSampler
from .scalarize import preference, tchebyshev

__all__ = ["History", "MoboSampler", "bin_weights", "preference", "successive_fronts", "tchebyshev"]
