"""Channel importance criteria: each is one class with one verb, `__call__(group) -> scores`.

Scores have one entry per root channel of a torch-pruning group; higher means keep.
Registered by name so the CLI lists what exists.
"""
from __future__ import annotations

import torch
import torch_pruning as tp

from .errors import SlimdeployError


class Importance:
    """Base criterion. `needs_gradients` criteria get one backward pass before pruning."""

    needs_gradients = False

    def __call__(self, group) -> torch.Tensor:
        raise NotImplementedError


class MagnitudeImportance(Importance):
    """Lp norm of every weight attached to the channel, averaged over the coupled layers."""

    def __init__(self, p: int = 2):
        self._tp = tp.importance.GroupMagnitudeImportance(p=p)

    def __call__(self, group) -> torch.Tensor:
        return self._tp(group)


class BNScaleImportance(Importance):
    """|gamma| of the BatchNorm layers in the group; L2 magnitude for groups without BatchNorm."""

    def __init__(self):
        self._tp = tp.importance.BNScaleImportance()
        self._fallback = MagnitudeImportance(2)

    def __call__(self, group) -> torch.Tensor:
        scores = self._tp(group)
        return self._fallback(group) if scores is None else scores


class TaylorImportance(Importance):
    """First-order Taylor |w · dL/dw|; needs a batch to compute gradients on."""

    needs_gradients = True

    def __init__(self):
        self._tp = tp.importance.GroupTaylorImportance()
        self._fallback = MagnitudeImportance(2)

    def __call__(self, group) -> torch.Tensor:
        scores = self._tp(group)
        return self._fallback(group) if scores is None else scores


class FirstChannels(Importance):
    """Keeps the lowest-numbered channels; used to rebuild a saved structure before loading weights."""

    def __call__(self, group) -> torch.Tensor:
        n = len(group[0].idxs)
        return torch.arange(n, 0, -1, dtype=torch.float32)


IMPORTANCES = {
    "l2": lambda: MagnitudeImportance(2),
    "l1": lambda: MagnitudeImportance(1),
    "bn": BNScaleImportance,
    "taylor": TaylorImportance,
}


def get_importance(name: str | Importance) -> Importance:
    if isinstance(name, Importance):
        return name
    if name not in IMPORTANCES:
        raise SlimdeployError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCES)}")
    return IMPORTANCES[name]()
