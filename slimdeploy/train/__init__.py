"""Training: an open loop (replaceable step, hooks, resumable state), fine-tuning with distillation,
BatchNorm recalibration and accuracy estimates."""
from __future__ import annotations

from .batches import EpochBatches
from .evaluate import (accuracy, estimate_accuracy, logits_of, recalibrate_batchnorm, recalibrated_accuracy,
                       settle_batchnorm)
from .finetune import (ProgressHook, classification_step, distillation_loss, finetune, sgd_optimizer,
                       train_classifier, unpack)
from .loop import Hook, IterableBatches, LoopState, TrainLoop, cosine_schedule

__all__ = ["EpochBatches", "Hook", "IterableBatches", "LoopState", "ProgressHook", "TrainLoop", "accuracy",
           "classification_step", "cosine_schedule", "distillation_loss", "estimate_accuracy", "finetune",
           "logits_of", "recalibrate_batchnorm", "recalibrated_accuracy", "settle_batchnorm", "sgd_optimizer",
           "train_classifier", "unpack"]
