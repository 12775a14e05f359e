"""How an adaptive-width network is trained: the settings alone, importable without torch."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..errors import SlimdeployError


@dataclass
class AdaptiveTraining:
    """How an adaptive-width network is trained (recorded in adaptive.json)."""

    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    quantile: float = 0.9         # k of the width quantile
    init_width: float = 1.0       # starting width, as a fraction of full
    prior_sigma: float = 1.0      # σ_θ of the weights' Gaussian prior
    rate_prior_mean: float = 0.0  # μ_λ of the rates' Gaussian prior
    rate_prior_std: float = 0.0   # σ_λ; 0 turns the rate prior off (the method's CIFAR setting)
    rate_lr: float = 10.0         # the rates' learning rate as a multiple of the weights'
    teacher_weight: float = 0.5   # share of the task loss distilled from the original model
    temperature: float = 4.0
    momentum: float = 0.9
    warmup_steps: int = 0
    checkpoint_every: int = 50    # steps between checkpoints (and one at the end)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **base: Any) -> "AdaptiveTraining":
        """A config from `base` and the known names of `settings` (a searcher's options); others are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**base, **{k: v for k, v in settings.items() if k in known and k not in base})

    def check(self) -> None:
        if self.epochs < 0 or self.batch_size < 2 or self.checkpoint_every < 1 or self.warmup_steps < 0:
            raise SlimdeployError("adaptive-width training needs epochs >= 0, batch_size >= 2, warmup_steps >= 0 "
                                  "and checkpoint_every >= 1")
        if not (self.lr > 0 and self.prior_sigma > 0 and self.rate_lr >= 0 and self.temperature > 0):
            raise SlimdeployError("adaptive-width training needs lr > 0, prior_sigma > 0, rate_lr >= 0 and "
                                  "temperature > 0")
        if not (0 < self.quantile < 1 and 0 < self.init_width <= 1 and 0 <= self.teacher_weight <= 1
                and self.rate_prior_std >= 0 and 0 <= self.momentum < 1):
            raise SlimdeployError("adaptive-width training needs quantile in (0, 1), init_width in (0, 1], "
                                  "teacher_weight in [0, 1], rate_prior_std >= 0 and momentum in [0, 1)")
