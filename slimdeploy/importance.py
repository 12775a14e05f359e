"""Channel importance criteria: each is one class with one verb, `__call__(group) -> scores`.

Scores have one entry per root channel of a torch-pruning group; higher means keep.
Registered by name so the CLI lists what exists. torch and torch-pruning are imported when a
criterion is built, so listing the names (the CLI's parser) works where torch is absent (the agent).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import SlimdeployError

if TYPE_CHECKING:
    import torch


class Importance:
    """Base criterion. `needs_gradients` criteria get one backward pass before pruning."""

    needs_gradients = False

    def __call__(self, group) -> torch.Tensor:
        raise NotImplementedError

    def score_group(self, item) -> torch.Tensor:
        """Scores for an `analysis.GraphGroup` (its slimdeploy name is `item.info.name`)."""
        return self(item.tp_group)


class MagnitudeImportance(Importance):
    """Lp norm of every weight attached to the channel, averaged over the coupled layers."""

    def __init__(self, p: int = 2):
        import torch_pruning as tp

        self._tp = tp.importance.GroupMagnitudeImportance(p=p)

    def __call__(self, group) -> torch.Tensor:
        return self._tp(group)


class BNScaleImportance(Importance):
    """|gamma| of the BatchNorm layers in the group; L2 magnitude for groups without BatchNorm."""

    def __init__(self):
        import torch_pruning as tp

        self._tp = tp.importance.BNScaleImportance()
        self._fallback = MagnitudeImportance(2)

    def __call__(self, group) -> torch.Tensor:
        scores = self._tp(group)
        return self._fallback(group) if scores is None else scores


class TaylorImportance(Importance):
    """First-order Taylor |w · dL/dw|; needs a batch to compute gradients on."""

    needs_gradients = True

    def __init__(self):
        import torch_pruning as tp

        self._tp = tp.importance.GroupTaylorImportance()
        self._fallback = MagnitudeImportance(2)

    def __call__(self, group) -> torch.Tensor:
        scores = self._tp(group)
        return self._fallback(group) if scores is None else scores


class FirstChannels(Importance):
    """Keeps the lowest-numbered channels; used to rebuild a saved structure before loading weights."""

    def __call__(self, group) -> torch.Tensor:
        import torch

        n = len(group[0].idxs)
        return torch.arange(n, 0, -1, dtype=torch.float32)


class KeepChannels(Importance):
    """Keeps exactly the given channels of each named group (the rest of a group is removed).

    `keep` maps a group name to the channel indices (or a bool mask) to keep; groups not named
    keep their first channels. Used to extract a supernet's sub-network with the channels it used.
    """

    def __init__(self, keep: dict[str, torch.Tensor]):
        self.keep = keep

    def score_group(self, item) -> torch.Tensor:
        import torch

        n = len(item.tp_group[0].idxs)
        kept = self.keep.get(item.info.name)
        if kept is None:
            return FirstChannels()(item.tp_group)
        scores = torch.zeros(n)
        scores[torch.as_tensor(kept)] = 1.0
        return scores


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
