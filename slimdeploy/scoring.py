"""What a search scores candidates on: the data split, and accuracy estimates on the original's weights.

`scoring_data` splits the training set into what training sees and a held-out *search* split
(the final figures use the dataset's own validation/test split, never seen by the search).
Every candidate is scored on the same calibration and held-out batches, so scores differ only by
the widths. Shared-weight scores come from `supernet.Supernet.scorer`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import Subset

from .analysis import Analysis
from .prune import group_scores, prune, retained_importance
from .space import Widths

SEARCH_SPLIT = 0.1        # share of the training set held out for scoring candidates
SEARCH_SPLIT_MAX = 1000   # at most this many samples
CALIBRATION_BATCHES = 3   # BatchNorm recalibration batches per candidate


def scoring_data(spec: str, input_shape, batch_size: int, seed: int) -> dict[str, Any]:
    """Loaders and fixed batches: train (without the search split), search split, final validation."""
    from .data import load_dataset, make_loader

    train, val, info = load_dataset(spec, input_shape=input_shape, seed=seed)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 7)).tolist()
    n_search = max(1, min(SEARCH_SPLIT_MAX, int(len(train) * SEARCH_SPLIT)))
    fit, search = Subset(train, sorted(order[n_search:])), Subset(train, sorted(order[:n_search]))
    calibration = make_loader(fit, batch_size, shuffle=True, seed=seed + 1)
    return {"train": make_loader(fit, batch_size, shuffle=True, seed=seed), "train_set": fit,
            "val": make_loader(val, batch_size, shuffle=False, seed=seed), "info": {**info, "n_search": n_search},
            "calibration": [b for _, b in zip(range(CALIBRATION_BATCHES), calibration)],
            "held_out": list(make_loader(search, 2 * batch_size, shuffle=False))}


def original_scorer(model: nn.Module, example: torch.Tensor, analysis: Analysis, data: dict | None,
                    importance: str) -> tuple[Callable[[Widths], float], str]:
    """Accuracy estimate on the original's weights: recalibrated accuracy with data, else retained importance."""
    if data is None:
        scores = group_scores(model, analysis, importance if importance in ("l1", "l2", "bn") else "l2")
        return (lambda w: retained_importance(scores, w)), "retained importance (data-free; no --data given)"
    from .train import estimate_accuracy

    def score(widths: Widths) -> float:
        candidate = prune(model, widths, example, analysis=analysis)
        return estimate_accuracy(candidate, data["calibration"], data["held_out"],
                                 calib_batches=CALIBRATION_BATCHES, eval_batches=None)

    return score, "accuracy after BatchNorm recalibration on the search split (no training)"
