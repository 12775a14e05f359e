"""Fine-tuning (with optional distillation) and cheap accuracy estimates for pruned models."""
from __future__ import annotations

from .evaluate import accuracy, estimate_accuracy, logits_of, recalibrate_batchnorm
from .finetune import distillation_loss, finetune, train_classifier

__all__ = ["accuracy", "distillation_loss", "estimate_accuracy", "finetune", "logits_of",
           "recalibrate_batchnorm", "train_classifier"]
