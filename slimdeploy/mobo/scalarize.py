"""The augmented Tchebyshev scalarization PareCO minimizes, and its random preference vectors.

T_λ(f) = max_i λ_i (f_i − z_i) + ρ Σ_i λ_i (f_i − z_i), for objectives f (lower is better),
a reference point z below every value and preference λ = (1 − w, w) (ALGORITHMS.md §5).
"""
from __future__ import annotations

import numpy as np


def preference(w: float) -> np.ndarray:
    """λ = (1 − w, w): weight 1 − w on the loss, w on the cost."""
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"a preference weight must be in [0, 1], got {w}")
    return np.array([1.0 - w, w])


def tchebyshev(objectives, weights, reference, rho: float = 1e-6) -> np.ndarray:
    """T_λ per row of `objectives` (n × m, or one point of m values); lower is better.

    Example:
        >>> tchebyshev([[2.0, 1.0]], [0.5, 0.5], [0.0, 0.0], rho=0.1)
        array([1.15])
    """
    f = np.atleast_2d(np.asarray(objectives, float))
    d = np.asarray(weights, float) * (f - np.asarray(reference, float))
    return d.max(axis=1) + rho * d.sum(axis=1)
