"""The width distribution of Adaptive Width Neural Networks (ALGORITHMS.md §4), as plain functions.

A group's learnable scalar ρ gives the rate λ = softplus(ρ) of an exponential distribution over
channel positions 0, 1, 2, ... Discretized, position i has probability
p(i) = F(i+1) − F(i) = e^{−λi}(1 − e^{−λ}), decreasing in i. The group's width is the
k-quantile plus 2, D = ⌊ln(1/(1−k))/λ⌋ + 2, and its channels are weighted by p over the first D
positions, renormalized to sum to 1 (`importance`). Nothing here knows about models.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

QUANTILE = 0.9  # the k of the width quantile (the method's default)


def rate(rho: torch.Tensor) -> torch.Tensor:
    """λ = softplus(ρ): the exponential's rate, positive for any ρ."""
    return F.softplus(rho)


def inverse_rate(lam: float) -> float:
    """The ρ whose softplus is `lam` (lam > 0)."""
    return lam + math.log(-math.expm1(-lam))


def pmf(lam: torch.Tensor, positions: int) -> torch.Tensor:
    """p(i) = e^{−λi}(1 − e^{−λ}) for i = 0 .. positions−1 (the discretized exponential)."""
    i = torch.arange(positions, dtype=lam.dtype, device=lam.device)
    return torch.exp(-lam * i) * -torch.expm1(-lam)


def quantile_width(lam: float, quantile: float = QUANTILE) -> int:
    """D = ⌊ln(1/(1−k))/λ⌋ + 2: the positions holding (about) the k-quantile of the distribution."""
    if not 0 <= quantile < 1:
        raise ValueError(f"the width quantile must be in [0, 1), got {quantile}")
    return int(math.floor(math.log(1 / (1 - quantile)) / lam)) + 2


def rate_for_width(width: int, quantile: float = QUANTILE) -> float:
    """The rate whose quantile width is `width` (≥ 3), chosen half a position inside the step."""
    if width < 3:
        raise ValueError(f"a quantile width is at least 3 positions to be adjustable, got {width}")
    return math.log(1 / (1 - quantile)) / (width - 1.5)


def importance(lam: torch.Tensor, width: int, positions: int) -> torch.Tensor:
    """f(i) = p(i) / Σ_{j<width} p(j) for i < width, 0 beyond; length `positions`, decreasing.

    Differentiable in `lam`; the integer `width` is held fixed (recomputed outside autograd).
    """
    p = pmf(lam, width)
    f = p / p.sum()
    return F.pad(f, (0, positions - width)) if positions > width else f[:positions]
